"""List files and class-names files: the ImageNet-LT / Places-LT / iNaturalist-2018 split format.

The one reader of both formats (DESIGN.md §4); the agent, the trainer and the data tools wrap it.

- A **list file** has one image per line, ``relative/path.jpg <label>``; the label is the last
  whitespace-separated field (so a path may contain spaces), an integer ``>= 0``. Blank lines and lines
  starting with ``#`` are ignored. Paths are returned as written (callers join them to a data root).
- A **class-names file** is either ``label<TAB>name`` on every line, or one name per line (label = index
  among the non-blank, non-comment lines). Not both in one file: mixing usually means a name that contains
  a tab, which would silently shift every later label. A label appears once. :func:`read_class_names`
  also wants labels ``0 .. C-1`` without gaps; :func:`read_class_map` allows gaps (a file may name only
  some classes of a dataset).
- Files are UTF-8 (a leading byte-order mark is ignored). Every problem is a :class:`ListFileError` whose
  message reads ``file:line: reason`` (or ``file: reason`` for a whole-file problem), one line, so a CLI
  prints it as it is.

Standard library only; :mod:`store.manifest` re-exports the readers, so the trainer imports only that.

>>> parse_list_line("n01440764/a b.JPEG 0", "train.txt:1")
ListEntry(path='n01440764/a b.JPEG', label=0)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ListEntry", "ListFileError", "parse_list_line", "read_class_map", "read_class_names",
           "read_list_file"]

_INTEGER = re.compile(r"-?[0-9]+")  # ASCII digits only: int() would also take "+3", "1_0" and "٣"


class ListFileError(ValueError):
    """A list or class-names file that cannot be used; ``str()`` reads ``file:line: reason``.

    ``where`` (``file:line`` or ``file``) and ``reason`` are the two halves; ``label`` is the label text as
    written when the problem is a label that is not a non-negative integer (else None), so a caller can
    word that case its own way.
    """

    def __init__(self, where: str, reason: str, *, label: str | None = None) -> None:
        super().__init__(f"{where}: {reason}")
        self.where, self.reason, self.label = where, reason, label

    def __reduce__(self) -> tuple[Any, ...]:  # survives pickling (process pools) with its fields
        return type(self), (self.where, self.reason), {"label": self.label}


@dataclass(frozen=True)
class ListEntry:
    """One image of a list file: its path (as written), its label, and ``file:line`` for messages."""

    path: str
    label: int
    where: str = field(default="", compare=False, repr=False)


def read_list_file(path: Path | str, num_classes: int | None = None) -> list[ListEntry]:
    """Read a list file (possibly empty); with ``num_classes`` also reject labels ``>= num_classes``."""
    path = Path(path)
    entries: list[ListEntry] = []
    for lineno, line in _numbered_lines(path):
        entry = parse_list_line(line, f"{path}:{lineno}")
        if entry is None:
            continue
        if num_classes is not None and entry.label >= num_classes:
            raise ListFileError(entry.where, f"label {entry.label} is out of range: the class-names file has "
                                             f"{num_classes} classes (labels 0..{num_classes - 1})")
        entries.append(entry)
    return entries


def parse_list_line(line: str, where: str) -> ListEntry | None:
    """One list-file line: ``None`` for a blank or ``#`` line, else an entry (or :class:`ListFileError`)."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    parts = text.rsplit(maxsplit=1)
    if len(parts) < 2:
        raise ListFileError(where, f"expected 'relative/path.jpg <label>', got {text!r} (no label)")
    rel, label_text = parts
    if not _INTEGER.fullmatch(label_text):
        raise ListFileError(where, f"expected 'relative/path.jpg <label>', got {text!r} "
                                   f"(label {label_text!r} is not an integer)", label=label_text)
    label = int(label_text)
    if label < 0:
        raise ListFileError(where, f"label {label} is negative; labels start at 0", label=label_text)
    return ListEntry(rel, label, where)


def read_class_names(path: Path | str) -> list[str]:
    """Class names indexed by label: labels must be ``0 .. C-1``, each exactly once.

    Both ``"1<TAB>dog\\n0<TAB>cat\\n"`` and ``"cat\\ndog\\n"`` give ``["cat", "dog"]``.
    """
    by_label = read_class_map(path)
    missing = sorted(set(range(len(by_label))) - set(by_label))
    if missing:
        raise ListFileError(str(path), f"labels must be 0..{len(by_label) - 1} without gaps; "
                                       f"missing {missing[:5]}")
    return [by_label[label] for label in range(len(by_label))]


def read_class_map(path: Path | str) -> dict[int, str]:
    """``{label: name}`` from a class-names file, in file order; labels may have gaps (``3<TAB>cat``)."""
    path = Path(path)
    lines = [(n, line.strip()) for n, line in _numbered_lines(path)]
    lines = [(n, text) for n, text in lines if text and not text.startswith("#")]
    if not lines:
        raise ListFileError(str(path), "no class names found; write one name per line or 'label<TAB>name'")
    tabbed = ["\t" in text for _, text in lines]
    if all(tabbed):
        return _labelled_names(path, lines)
    if any(tabbed):
        lineno = lines[tabbed.index(not tabbed[0])][0]
        raise ListFileError(f"{path}:{lineno}",
                            "mixes 'label<TAB>name' lines with plain-name lines; use one layout")
    return {index: text for index, (_, text) in enumerate(lines)}


def _labelled_names(path: Path, lines: list[tuple[int, str]]) -> dict[int, str]:
    by_label: dict[int, str] = {}
    first_line: dict[int, int] = {}
    for lineno, text in lines:
        where = f"{path}:{lineno}"
        label_text, name = (part.strip() for part in text.split("\t", 1))  # name: not empty, text is stripped
        if not _INTEGER.fullmatch(label_text):
            raise ListFileError(where, f"label {label_text!r} is not an integer", label=label_text)
        label = int(label_text)
        if label < 0:
            raise ListFileError(where, f"label {label} is negative; labels start at 0", label=label_text)
        if label in by_label:
            raise ListFileError(where, f"label {label} is used twice (it appears twice, on lines "
                                       f"{first_line[label]} and {lineno}); each label names one class")
        by_label[label], first_line[label] = name, lineno
    return by_label


def _numbered_lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ListFileError(str(path), "no such file") from None
    except IsADirectoryError:
        raise ListFileError(str(path), "is a folder, expected a text file") from None
    except UnicodeDecodeError as exc:
        raise ListFileError(str(path), f"not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ListFileError(str(path), f"cannot read: {exc.strerror or exc}") from None
    return list(enumerate(text.splitlines(), start=1))
