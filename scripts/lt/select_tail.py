"""select-tail: write ``tail.txt``, the classes the generation agent should fill.

    python -m scripts.lt_tools select-tail --list train.txt --class-names classnames.txt --out tail.txt
    python -m scripts.lt_tools select-tail --list train.txt --class-names classnames.txt --rarest 50
    python -m agent.run --classes tail.txt ...

Selection: the classes with fewer than ``--threshold`` training images (default 20, the paper's few-shot
bound; the official LTGC code used 100), or the ``--rarest N`` classes (ties broken by label). Classes
named in the class-names file but absent from the list count as 0 images, so they are selected.

Output, the format ``agent.run`` reads (docs/DESIGN.md §8): a ``#`` comment stating the rule, then one class per
line as ``label<TAB>name``, in label order.
"""

from __future__ import annotations

from store.interrupt import exit_on_interrupt

if __name__ == "__main__":  # before the imports below: Ctrl-C while they load is one line, not a traceback
    exit_on_interrupt("select-tail", "the command did not finish; run it again")

import sys
from collections.abc import Sequence
from pathlib import Path

from scripts.lt.listfile import ListFileError, class_counts, read_class_names, read_list_file
from store.cli import OneLineParser

DEFAULT_THRESHOLD = 20


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 for bad input or an empty selection)."""
    args = _parser().parse_args(argv)
    try:
        names = read_class_names(args.class_names)
        counts = class_counts(read_list_file(args.list, num_classes=len(names)), len(names))
    except ListFileError as exc:
        print(f"select-tail: error: {exc}", file=sys.stderr)
        return 2
    if args.rarest is not None:
        if args.rarest < 1:
            print(f"select-tail: error: --rarest must be >= 1, got {args.rarest}", file=sys.stderr)
            return 2
        chosen = rarest(counts, args.rarest)
        rule = f"the {len(chosen)} rarest classes of {args.list}"
    else:
        chosen = below_threshold(counts, args.threshold)
        rule = f"classes with fewer than {args.threshold} training images in {args.list}"
    if not chosen:
        print(f"select-tail: error: no class has fewer than {args.threshold} training images "
              f"(the rarest has {min(counts)}); raise --threshold or use --rarest N", file=sys.stderr)
        return 2
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(format_tail(chosen, names, rule), encoding="utf-8")
    except OSError as exc:
        print(f"select-tail: error: cannot write {args.out}: {exc.strerror or exc}; check --out", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {len(chosen)} of {len(names)} classes ({rule})")
    return 0


def below_threshold(counts: Sequence[int], threshold: int) -> list[int]:
    """Labels with ``count < threshold``, in label order.

    >>> below_threshold([25, 20, 19, 0], 20)
    [2, 3]
    """
    return [label for label, n in enumerate(counts) if n < threshold]


def rarest(counts: Sequence[int], n: int) -> list[int]:
    """The ``n`` labels with the fewest images (ties: lower label first), returned in label order.

    >>> rarest([5, 1, 5, 1], 3)
    [0, 1, 3]
    """
    by_rarity = sorted(range(len(counts)), key=lambda label: (counts[label], label))
    return sorted(by_rarity[:n])


def format_tail(labels: Sequence[int], names: Sequence[str], rule: str) -> str:
    """``tail.txt`` text: a comment with the rule, then ``label<TAB>name`` lines.

    >>> format_tail([1], ["cat", "dog"], "test")
    '# select-tail: test\\n1\\tdog\\n'
    """
    return f"# select-tail: {rule}\n" + "".join(f"{label}\t{names[label]}\n" for label in labels)


def _parser() -> OneLineParser:
    p = OneLineParser(
        prog="lt_tools select-tail",
        description="Write tail.txt (label<TAB>name per line) for python -m agent.run --classes.",
    )
    p.add_argument("--list", type=Path, required=True, help="training list file: 'relative/path <label>'")
    p.add_argument("--class-names", type=Path, required=True,
                   help="class-names file: 'label<TAB>name' or one name per line")
    rule = p.add_mutually_exclusive_group()
    rule.add_argument("--threshold", type=int, default=DEFAULT_THRESHOLD,
                      help=f"select classes with fewer than T images (default {DEFAULT_THRESHOLD}; official code: 100)")
    rule.add_argument("--rarest", type=int, default=None, metavar="N", help="select the N rarest classes instead")
    p.add_argument("--out", type=Path, default=Path("tail.txt"), help="output file (default tail.txt)")
    return p


if __name__ == "__main__":
    raise SystemExit(main())
