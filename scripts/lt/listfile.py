"""List files and class-names files: the ImageNet-LT / Places-LT / iNaturalist-2018 split format.

Contract (DESIGN.md §4):

- A **list file** has one image per line, ``relative/path.jpg <label>``; the label is the last
  whitespace-separated field (so a path may contain spaces), an integer ``>= 0``. Blank lines and lines
  starting with ``#`` are ignored. Paths are relative to a data root (absolute paths are kept as they are).
- A **class-names file** is either ``label<TAB>name`` on every line, or one name per line (line index =
  label). Labels must be ``0 .. C-1``, each exactly once.
- Every problem is a :class:`ListFileError` whose message reads ``file:line: reason`` (or ``file: reason``
  for whole-file problems), so a CLI prints it as one line.

The trainer keeps its own reader (it may not import ``scripts/``); this one serves the data tools.

>>> parse_list_line("n01440764/a b.JPEG 0", "train.txt:1")
ListEntry(path='n01440764/a b.JPEG', label=0)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


class ListFileError(ValueError):
    """A list or class-names file that cannot be used; the message reads ``file:line: reason``."""


@dataclass(frozen=True)
class ListEntry:
    """One image of a list file: its path (as written) and its integer label."""

    path: str
    label: int


def read_list_file(path: Path | str, num_classes: int | None = None) -> list[ListEntry]:
    """Read a list file; with ``num_classes`` also reject labels ``>= num_classes``."""
    path = Path(path)
    entries: list[ListEntry] = []
    for lineno, line in _numbered_lines(path):
        entry = parse_list_line(line, f"{path}:{lineno}")
        if entry is None:
            continue
        if num_classes is not None and entry.label >= num_classes:
            raise ListFileError(
                f"{path}:{lineno}: label {entry.label} is out of range: the class-names file has "
                f"{num_classes} classes (labels 0..{num_classes - 1})"
            )
        entries.append(entry)
    return entries


def parse_list_line(line: str, where: str) -> ListEntry | None:
    """Parse one line; ``None`` for a blank or ``#`` comment line, else an entry or ``ListFileError``."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    parts = text.rsplit(maxsplit=1)
    if len(parts) < 2:
        raise ListFileError(f"{where}: expected '<path> <label>', got {text!r} (no label)")
    rel, label_text = parts
    try:
        label = int(label_text)
    except ValueError:
        raise ListFileError(f"{where}: label {label_text!r} is not an integer") from None
    if label < 0:
        raise ListFileError(f"{where}: label {label} is negative; labels start at 0")
    return ListEntry(rel, label)


def read_class_names(path: Path | str) -> list[str]:
    """Read a class-names file into a list indexed by label.

    Both layouts are accepted, but not mixed in one file: mixing usually means a name that contains a
    tab, which would silently shift every later label.
    """
    path = Path(path)
    lines = [(n, line) for n, line in _numbered_lines(path) if line.strip() and not line.startswith("#")]
    if not lines:
        raise ListFileError(f"{path}: no class names found; write one name per line or 'label<TAB>name'")
    tabbed = ["\t" in line for _, line in lines]
    if all(tabbed):
        return _labelled_names(path, lines)
    if any(tabbed):
        lineno = lines[tabbed.index(not tabbed[0])][0]
        raise ListFileError(
            f"{path}:{lineno}: mixes 'label<TAB>name' lines with plain-name lines; use one layout"
        )
    return [_checked_name(line.strip(), f"{path}:{n}") for n, line in lines]


def write_list_file(path: Path, entries: Iterable[ListEntry]) -> None:
    """Write ``path label`` lines (the inverse of :func:`read_list_file`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{e.path} {e.label}\n" for e in entries), encoding="utf-8")


def write_class_names(path: Path, names: Sequence[str]) -> None:
    """Write ``label<TAB>name`` lines, the layout that survives names with spaces."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\t{name}\n" for i, name in enumerate(names)), encoding="utf-8")


def class_counts(entries: Iterable[ListEntry], num_classes: int) -> list[int]:
    """Images per label, zero for labels with none.

    >>> class_counts([ListEntry("a", 1), ListEntry("b", 1)], 3)
    [0, 2, 0]
    """
    tally = Counter(e.label for e in entries)
    return [tally.get(label, 0) for label in range(num_classes)]


def _labelled_names(path: Path, lines: list[tuple[int, str]]) -> list[str]:
    by_label: dict[int, str] = {}
    for lineno, line in lines:
        where = f"{path}:{lineno}"
        label_text, name = line.split("\t", 1)
        try:
            label = int(label_text.strip())
        except ValueError:
            raise ListFileError(f"{where}: label {label_text.strip()!r} is not an integer") from None
        if label < 0:
            raise ListFileError(f"{where}: label {label} is negative; labels start at 0")
        if label in by_label:
            raise ListFileError(f"{where}: label {label} appears twice")
        by_label[label] = _checked_name(name.strip(), where)
    missing = sorted(set(range(len(by_label))) - set(by_label))
    if missing:
        raise ListFileError(
            f"{path}: labels must be 0..{len(by_label) - 1} without gaps; missing {missing[:5]}"
        )
    return [by_label[label] for label in range(len(by_label))]


def _checked_name(name: str, where: str) -> str:
    if not name:
        raise ListFileError(f"{where}: empty class name")
    return name


def _numbered_lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ListFileError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise ListFileError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ListFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return list(enumerate(text.splitlines(), start=1))
