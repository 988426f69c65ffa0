"""folder-to-list: a list file (and a class-names file) from an ImageFolder tree.

    python -m scripts.lt_tools folder-to-list --images data/train --out data/train.txt
    python -m scripts.lt_tools folder-to-list --images data/test --out data/test.txt \\
        --class-names data/classnames.txt

Labels, the rule the agent (``--images``) and the trainer use for an ImageFolder: without ``--class-names``
a folder's label is its position among the sorted class folders, and that numbering is written as a
class-names file (``--names-out``, default ``classnames.txt`` beside the list). With ``--class-names FILE``
each folder takes the label of the class it names (exact name, slug, or case/punctuation-blind match:
:class:`store.lists.ClassIndex`) and no names file is written: FILE stays the numbering.

Paths in the list are relative to the list's folder (the trainer's default ``--data-root``), with ``/``.
Both files are written whole or not at all. An existing names file with other classes is never replaced
(that would renumber every list made with it): pass another ``--names-out``. Bad input is one
``file: reason`` line on stderr and exit status 2.
"""

from __future__ import annotations

from store.interrupt import exit_on_interrupt

if __name__ == "__main__":  # before the imports below: Ctrl-C while they load is one line, not a traceback
    exit_on_interrupt("folder-to-list", "nothing was written")

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from scripts.lt.listfile import ListEntry, write_class_names, write_list_file
from store.cli import OneLineParser
from store.errors import UsageError, usage_line
from store.lists import ClassIndex, FolderClass, ListFileError, read_class_names, read_image_folder


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 2 bad input or an output that cannot be written)."""
    args = _parser().parse_args(argv)
    try:
        folders = read_image_folder(args.images)
        names = read_class_names(args.class_names) if args.class_names else [f.name for f in folders]
        entries = list_entries(folders, names, args.images, args.out.parent,
                               "--class-names " + str(args.class_names) if args.class_names else "")
        names_out = None if args.class_names else (args.names_out or args.out.parent / "classnames.txt")
        if names_out is not None:
            _check_names_file(names_out, names)
        _write(args.out, names_out, entries, names)
    except UsageError as exc:
        print(f"folder-to-list: {usage_line(exc)}", file=sys.stderr)
        return 2
    empty = [f.name for f in folders if not f.images]
    if empty:
        print(f"folder-to-list: warning: {len(empty)} class folder(s) hold no images (first: {empty[0]!r}); "
              f"they keep their label", file=sys.stderr)
    numbering = f"{names_out} ({len(names)} classes, labels = sorted folder names)" if names_out \
        else f"labels from {args.class_names}"
    print(f"wrote {args.out}: {len(entries)} images in {len(folders)} class folders; {numbering}")
    return 0


def list_entries(folders: Sequence[FolderClass], names: Sequence[str], root: Path, list_dir: Path,
                 names_source: str = "") -> list[ListEntry]:
    """One entry per image, labelled by the class its folder names; paths relative to ``list_dir``.

    Without ``names_source`` the names are the folders' own (sorted), so folder ``k`` gets label ``k``.
    """
    index = ClassIndex(names)
    entries: list[ListEntry] = []
    for folder in folders:
        label = index.find(folder.name)
        if label is None:
            raise ListFileError(str(root / folder.name), f"class folder {folder.name!r} matches no class of "
                                                         f"{names_source}; rename it or add the class")
        for image in folder.images:
            rel = Path(os.path.relpath(image, list_dir)).as_posix()
            if "\n" in rel or "\r" in rel:
                raise ListFileError(str(image), "a file name with a line break cannot go into a list file; "
                                                "rename the file")
            entries.append(ListEntry(rel, label))
    return entries


def _check_names_file(path: Path, names: Sequence[str]) -> None:
    if not path.exists():
        return
    try:
        existing = read_class_names(path)
    except ListFileError:
        existing = None
    if existing != list(names):
        raise ListFileError(str(path), "exists and holds other class names; it numbers the labels of lists made "
                                       "with it, so it is not replaced: pass --names-out elsewhere, or "
                                       "--class-names to use its numbering")


def _write(out: Path, names_out: Path | None, entries: list[ListEntry], names: Sequence[str]) -> None:
    target = out
    try:
        if names_out is not None:
            target = names_out
            write_class_names(names_out, names)
        target = out
        write_list_file(out, entries)
    except OSError as exc:
        flag = "--out" if target == out else "--names-out"
        raise ListFileError(str(target), f"cannot write: {exc.strerror or exc}; check {flag}") from None


def _parser() -> OneLineParser:
    p = OneLineParser(
        prog="lt_tools folder-to-list",
        description="Write a list file ('relative/path <label>') and a class-names file from an ImageFolder tree.",
    )
    p.add_argument("--images", type=Path, required=True, help="ImageFolder tree: one folder per class")
    p.add_argument("--out", type=Path, required=True, help="list file to write (paths relative to its folder)")
    p.add_argument("--class-names", type=Path, default=None,
                   help="number the classes as this class-names file does (folders matched by name)")
    p.add_argument("--names-out", type=Path, default=None,
                   help="class-names file to write without --class-names (default: classnames.txt beside --out)")
    return p


if __name__ == "__main__":
    raise SystemExit(main())
