"""make-lt: build an exponential-profile long-tailed training split and a balanced test split.

    python -m scripts.lt_tools make-lt --fashion-mnist /usr/share/datasets/fashion-mnist \\
        --out data/fmnist-lt --n-max 1000 --imbalance 100 --seed 0
    python -m scripts.lt_tools make-lt --image-folder photos/ --out data/photos-lt --test-per-class 20

Counts follow ``n_i = floor(n_max * IF ** (-i / (C - 1)))`` (rounding: :mod:`scripts.lt.profile`), class
``order[i]`` getting ``n_i`` (``--class-order natural|random|name,name,...``). Selection is seeded.

Test split, balanced: from Fashion-MNIST's ``t10k`` files (``--test-per-class``, default the most every
class has: 1,000), or, for an ImageFolder tree, ``--test-per-class`` images per class held out *before*
the long-tailed draw, so train and test never share an image.

Output folder (every path in the lists is relative to it, so it is the trainer's ``--data-root``)::

    train/<class-slug>/<source index>.png   test/<class-slug>/<source index>.png
    train.txt  test.txt          ``path label`` list files
    classnames.txt               ``label<TAB>name``
    split.json                   settings, class order, per-class counts (for provenance)

Labels keep the source's numbering; the class order only decides which class gets which count.
"""

from __future__ import annotations

from store.interrupt import exit_on_interrupt

if __name__ == "__main__":  # before the imports below: Ctrl-C while they load is one line, not a traceback
    exit_on_interrupt("make-lt", "the split was not finished; run it again")

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from scripts.lt.listfile import ListEntry, write_class_names, write_list_file
from scripts.lt.profile import (
    ProfileError,
    class_order,
    counts_by_label,
    lt_counts,
    shuffled_pools,
    take_counts,
)
from scripts.lt.sources import ImageSource, SourceError, fashion_mnist, image_folder
from store.cli import OneLineParser
from store.slug import slugify

DEFAULT_FOLDER_TEST_PER_CLASS = 20


@dataclass(frozen=True)
class SplitConfig:
    """Settings of one long-tailed split; saved in ``split.json``."""

    n_max: int = 1000
    imbalance: float = 100.0
    seed: int = 0
    class_order: str = "natural"
    test_per_class: int | None = None  # None: the source's default (see the module docstring)


@dataclass
class SplitResult:
    """What :func:`build_split` wrote, plus the unused training images for callers that need a reserve."""

    class_names: list[str]
    order: list[int]
    train_counts: dict[int, int]
    train: list[ListEntry]
    test: list[ListEntry]
    # Per label: training-source indices not in the split, in the same seeded order (disjoint from it).
    reserve: dict[int, list[int]] = field(default_factory=dict)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 2 bad input, printed as one line)."""
    args = _parser().parse_args(argv)
    cfg = SplitConfig(args.n_max, args.imbalance, args.seed, args.class_order, args.test_per_class)
    try:
        if args.fashion_mnist is not None:
            train_src = fashion_mnist(args.fashion_mnist, "train")
            result = build_split(cfg, train_src, fashion_mnist(args.fashion_mnist, "t10k"), args.out)
        else:
            result = build_split(cfg, image_folder(args.image_folder), None, args.out)
    except (ProfileError, SourceError) as exc:
        print(f"make-lt: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an unwritable --out, a full disk: say which file, not a traceback
        print(f"make-lt: error: cannot write {exc.filename or args.out}: {exc.strerror or exc}; "
              "check --out", file=sys.stderr)
        return 2
    counts = [result.train_counts[label] for label in result.order]
    print(f"wrote {args.out}: {len(result.train)} train images {counts}, {len(result.test)} test images")
    return 0


def build_split(
    cfg: SplitConfig, train_src: ImageSource, test_src: ImageSource | None, out: Path
) -> SplitResult:
    """Select, write PNGs and list files into ``out``; ``test_src=None`` holds the test split out of train."""
    names = train_src.class_names
    if cfg.test_per_class is not None and cfg.test_per_class < 0:
        raise ProfileError(f"--test-per-class must be >= 0, got {cfg.test_per_class}")
    if test_src is not None and test_src.class_names != names:
        raise SourceError("train and test sources name different classes")
    pools = shuffled_pools(train_src.labels, len(names), cfg.seed)
    if test_src is None:
        per_class = cfg.test_per_class if cfg.test_per_class is not None else DEFAULT_FOLDER_TEST_PER_CLASS
        test_idx = take_counts(pools, {c: per_class for c in range(len(names))}, names, "the test split")
        pools = [pool[per_class:] for pool in pools]
        test_from = train_src
    else:
        test_pools = shuffled_pools(test_src.labels, len(names), cfg.seed)
        per_class = cfg.test_per_class if cfg.test_per_class is not None else min(map(len, test_pools))
        test_idx = take_counts(test_pools, {c: per_class for c in range(len(names))}, names, "the test split")
        test_from = test_src
    order = class_order(cfg.class_order, names, cfg.seed)
    wanted = counts_by_label(order, lt_counts(cfg.n_max, cfg.imbalance, len(names)))
    train_idx = take_counts(pools, wanted, names, "the long-tailed training split")
    result = SplitResult(
        class_names=list(names),
        order=order,
        train_counts=wanted,
        train=_write_images(out, "train", train_src, train_idx),
        test=_write_images(out, "test", test_from, test_idx),
        reserve={label: pools[label][wanted[label]:] for label in range(len(names))},
    )
    write_list_file(out / "train.txt", result.train)
    write_list_file(out / "test.txt", result.test)
    write_class_names(out / "classnames.txt", names)
    _write_split_json(out / "split.json", cfg, result)
    return result


def _write_images(
    out: Path, part: str, src: ImageSource, chosen: dict[int, list[int]]
) -> list[ListEntry]:
    entries: list[ListEntry] = []
    for label in sorted(chosen):
        folder = Path(part) / slugify(src.class_names[label])
        (out / folder).mkdir(parents=True, exist_ok=True)
        # Sorted source indices make the list files' order independent of the shuffle.
        for index in sorted(chosen[label]):
            rel = folder / f"{index:06d}.png"
            src.image(index).save(out / rel, format="PNG")
            entries.append(ListEntry(rel.as_posix(), label))
    return entries


def _write_split_json(path: Path, cfg: SplitConfig, result: SplitResult) -> None:
    info = {
        "config": asdict(cfg),
        "formula": "n_i = floor(n_max * IF ** (-i / (C - 1)) + 1e-9)",
        "class_order": [result.class_names[label] for label in result.order],
        "train_counts": {result.class_names[k]: v for k, v in sorted(result.train_counts.items())},
        "train_images": len(result.train),
        "test_images": len(result.test),
    }
    path.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _parser() -> OneLineParser:
    p = OneLineParser(
        prog="lt_tools make-lt",
        description="Build an exponential-profile long-tailed split (PNG images, list files, class names).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--fashion-mnist", type=Path, metavar="DIR",
                     help="folder with Fashion-MNIST's train-*/t10k-* IDX files (.gz or not)")
    src.add_argument("--image-folder", type=Path, metavar="DIR", help="ImageFolder tree: DIR/<class>/<images>")
    p.add_argument("--out", type=Path, required=True, help="output folder (becomes the trainer's --data-root)")
    p.add_argument("--n-max", type=int, default=1000, help="images of the most frequent class (default 1000)")
    p.add_argument("--imbalance", type=float, default=100.0, help="imbalance factor IF = n_max/n_min (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the image selection and a random class order")
    p.add_argument("--class-order", default="natural",
                   help="'natural' (label order), 'random' (seeded), or every class once: name or label, comma-separated")
    p.add_argument("--test-per-class", type=int, default=None,
                   help=f"balanced test images per class (default: all of t10k balanced; "
                        f"{DEFAULT_FOLDER_TEST_PER_CLASS} held out for --image-folder)")
    return p


if __name__ == "__main__":
    raise SystemExit(main())
