"""List files and class-names files for the data tools: the shared readers, plus the writers and counts.

The format and its readers live in :mod:`store.lists` (one reader for the agent, the trainer and these
tools); they are re-exported here, so ``ListFileError`` is the same class everywhere. This module adds what
only the tools need: :func:`write_list_file`, :func:`write_class_names` (the inverse of the readers; each
writes its file whole or not at all) and :func:`class_counts`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from store.lists import ListEntry, ListFileError, parse_list_line, read_class_names, read_list_file
from store.manifest import atomic_write_text

__all__ = ["ListEntry", "ListFileError", "class_counts", "parse_list_line", "read_class_names", "read_list_file",
           "write_class_names", "write_list_file"]


def write_list_file(path: Path, entries: Iterable[ListEntry]) -> None:
    """Write ``path label`` lines (the inverse of :func:`read_list_file`), atomically."""
    atomic_write_text(path, "".join(f"{e.path} {e.label}\n" for e in entries))


def write_class_names(path: Path, names: Sequence[str]) -> None:
    """Write ``label<TAB>name`` lines, the layout that survives names with spaces, atomically."""
    atomic_write_text(path, "".join(f"{i}\t{name}\n" for i, name in enumerate(names)))


def class_counts(entries: Iterable[ListEntry], num_classes: int) -> list[int]:
    """Images per label, zero for labels with none.

    >>> class_counts([ListEntry("a", 1), ListEntry("b", 1)], 3)
    [0, 2, 0]
    """
    tally = Counter(e.label for e in entries)
    return [tally.get(label, 0) for label in range(num_classes)]
