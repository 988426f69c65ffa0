"""inspect: per-class counts of a list-file split and its many / medium / few breakdown.

    python -m scripts.lt_tools inspect --list ImageNet_LT_train.txt --class-names classnames.txt
    python -m scripts.lt_tools inspect --list train.txt --class-names classnames.txt --many 100 --few 20 --json

Groups use the paper's thresholds by default: many > 100, few < 20, medium otherwise (settable). With
``--data-root`` every listed image is also checked to exist. Output is a table on stdout (or one JSON
object with ``--json``); bad input is one ``file:line: reason`` line on stderr and exit status 2.
"""

from __future__ import annotations

from store.interrupt import exit_on_interrupt

if __name__ == "__main__":  # before the imports below: Ctrl-C while they load is one line, not a traceback
    exit_on_interrupt("inspect", "nothing was written")

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scripts.lt.listfile import ListFileError, class_counts, read_class_names, read_list_file
from scripts.lt.profile import split_group
from store.cli import OneLineParser

GROUPS = ("many", "medium", "few")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        names = read_class_names(args.class_names)
        entries = read_list_file(args.list, num_classes=len(names))
    except ListFileError as exc:
        print(f"inspect: error: {exc}", file=sys.stderr)
        return 2
    if args.data_root is not None:
        missing = [e.path for e in entries if not (args.data_root / e.path).is_file()]
        if missing:
            print(f"inspect: error: {len(missing)} listed image(s) not found under {args.data_root}, "
                  f"first: {missing[0]}; check --data-root", file=sys.stderr)
            return 2
    summary = summarize(class_counts(entries, len(names)), names, args.many, args.few)
    print(json.dumps(summary, indent=2, ensure_ascii=False) if args.json else format_summary(summary))
    return 0


def summarize(counts: Sequence[int], names: Sequence[str], many: int = 100, few: int = 20) -> dict[str, Any]:
    """Counts, per-class group and group totals, as one JSON-able dict.

    >>> s = summarize([150, 30, 5], ["a", "b", "c"])
    >>> s["groups"]["many"]["classes"], s["groups"]["few"]["images"], s["imbalance"]
    (1, 5, 30.0)
    """
    group_of = [split_group(n, many, few) for n in counts]
    per_class = [
        {"label": i, "name": names[i], "count": n, "group": group_of[i]} for i, n in enumerate(counts)
    ]
    groups = {
        g: {"classes": group_of.count(g), "images": sum(n for n, gg in zip(counts, group_of, strict=True) if gg == g)}
        for g in GROUPS
    }
    nonzero = [n for n in counts if n > 0]
    return {
        "classes": len(counts),
        "images": sum(counts),
        "max": max(counts, default=0),
        "min": min(counts, default=0),
        "imbalance": (max(nonzero) / min(nonzero)) if nonzero else None,
        "empty_classes": sum(1 for n in counts if n == 0),
        "thresholds": {"many": many, "few": few},
        "groups": groups,
        "per_class": per_class,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text table: one row per class (most frequent first), then the group totals."""
    rows = sorted(summary["per_class"], key=lambda c: (-c["count"], c["label"]))
    width = max([len(str(c["name"])) for c in rows] + [5])
    lines = [f"{'label':>6}  {'class':<{width}}  {'count':>7}  group"]
    lines += [f"{c['label']:>6}  {c['name']:<{width}}  {c['count']:>7}  {c['group']}" for c in rows]
    imbalance = summary["imbalance"]
    lines.append("")
    lines.append(
        f"{summary['classes']} classes, {summary['images']} images, max {summary['max']}, min {summary['min']}, "
        f"imbalance {imbalance:.1f}" if imbalance is not None else f"{summary['classes']} classes, no images"
    )
    many, few = summary["thresholds"]["many"], summary["thresholds"]["few"]
    rules = {"many": f"> {many}", "medium": f"{few}..{many}", "few": f"< {few}"}
    for g in GROUPS:
        info = summary["groups"][g]
        lines.append(f"{g:<6} ({rules[g]:>8}): {info['classes']} classes, {info['images']} images")
    if summary["empty_classes"]:
        lines.append(f"warning: {summary['empty_classes']} classes have no images")
    return "\n".join(lines)


def _parser() -> OneLineParser:
    p = OneLineParser(
        prog="lt_tools inspect", description="Per-class counts and the many/medium/few breakdown of a split."
    )
    p.add_argument("--list", type=Path, required=True, help="list file: 'relative/path <label>' per line")
    p.add_argument("--class-names", type=Path, required=True,
                   help="class-names file: 'label<TAB>name' or one name per line")
    p.add_argument("--data-root", type=Path, default=None, help="also check that every listed image exists")
    p.add_argument("--many", type=int, default=100, help="many-shot: more than this many images (default 100)")
    p.add_argument("--few", type=int, default=20, help="few-shot: fewer than this many images (default 20)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return p


if __name__ == "__main__":
    raise SystemExit(main())
