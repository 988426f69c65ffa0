"""List files and class-names files: the ImageNet-LT / Places-LT / iNaturalist-2018 split format.

The one reader of both formats (docs/DESIGN.md §8); the agent, the trainer and the data tools wrap it.

- A **list file** has one image per line, ``relative/path.jpg <label>``; the label is the last
  whitespace-separated field (so a path may contain spaces), an integer ``>= 0``. Blank lines and lines
  starting with ``#`` are ignored. Paths are returned as written (callers join them to a data root).
- A **class-names file** is either ``label<TAB>name`` on every line, or one name per line (label = index
  among the non-blank, non-comment lines). Not both in one file: mixing usually means a name that contains
  a tab, which would silently shift every later label. A label appears once. :func:`read_class_names`
  also wants labels ``0 .. C-1`` without gaps; :func:`read_class_map` allows gaps (a file may name only
  some classes of a dataset).
  A class name appears once, too: a second line with the same name is an error
  (``file:line: duplicate class name 'x' (first at line n)``), since a name resolves to one label.
- An **ImageFolder** tree (torchvision's layout, and the agent's ``--images``) has one folder per class;
  :func:`read_image_folder` lists its non-hidden sub-folders in sorted order, so without a class-names file
  the label of a folder is its position in that order. A class's images are the files directly inside its
  folder with an image extension (:data:`IMAGE_EXTENSIONS`), sorted.
- :class:`ClassIndex` finds which class of a class-names list a folder name or a manifest's ``class_name``
  means, with the agent's folder rule: the exact name, else a class whose slug (:func:`store.slug.slugify`)
  it is, else the one class equal to it after :func:`loose_key` (case, punctuation and ``_`` ignored).
- Files are UTF-8 (a leading byte-order mark is ignored). Every problem is a :class:`ListFileError` whose
  message reads ``file:line: reason`` (or ``file: reason`` for a whole-file problem), one line, so a CLI
  prints it as it is; it is a :class:`store.errors.UsageError` (exit status 2).

Standard library only (with :mod:`store.slug` and :mod:`store.errors`, the same); :mod:`store.manifest`
re-exports the readers, so the trainer imports only that.

>>> parse_list_line("n01440764/a b.JPEG 0", "train.txt:1")
ListEntry(path='n01440764/a b.JPEG', label=0)
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from store.errors import UsageError
from store.slug import slugify

__all__ = ["IMAGE_EXTENSIONS", "ClassIndex", "FolderClass", "ListEntry", "ListFileError", "loose_key",
           "parse_list_line", "read_class_map", "read_class_names", "read_image_folder", "read_list_file"]

# The agent's --images extensions (agent/lifecycle/inputs.py): one rule for which files of a class folder are images.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
_INTEGER = re.compile(r"-?[0-9]+")  # ASCII digits only: int() would also take "+3", "1_0" and "٣"
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


class ListFileError(UsageError):
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
    _check_unique_names(path, lines)
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
    _check_unique_names(path, [(lineno, text.split("\t", 1)[1].strip()) for lineno, text in lines])
    return by_label


def _check_unique_names(path: Path, names: list[tuple[int, str]]) -> None:
    """A name given twice would silently mean its first label everywhere a name is looked up."""
    first: dict[str, int] = {}
    for lineno, name in names:
        if name in first:
            raise ListFileError(f"{path}:{lineno}", f"duplicate class name {name!r} (first at line {first[name]}); "
                                                    "each class needs its own name: rename one of the two")
        first[name] = lineno


def loose_key(text: str) -> str:
    """The comparison key of a name: NFKC, case-folded, every run of punctuation, space or ``_`` one space.

    The agent's ``agent.graph.checks.normalise``, so both sides match folders the same way.

    >>> loose_key("Red_Fox") == loose_key("red fox") == loose_key(" RED-fox.")
    True
    """
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


class ClassIndex:
    """Which class of a class-names list a text (a folder name, a manifest's ``class_name``) means.

    Tried in order: the exact name; a class whose slug is the text (the agent names its image folders by
    slug); the one class equal after :func:`loose_key` (``red_fox`` for "red fox"). Two classes with the
    same loose key match neither loosely: the text must then be exact.

    >>> index = ClassIndex(["cat", "red fox", "Snow Owl"])
    >>> index.find("red fox"), index.find("red-fox-e4b9541d"), index.find("snow_owl"), index.find("dog")
    (1, 1, 2, None)
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self._exact = {name: label for label, name in enumerate(self.names)}
        self._slug = {slugify(name): label for label, name in enumerate(self.names)}
        loose: dict[str, list[int]] = {}
        for label, name in enumerate(self.names):
            loose.setdefault(loose_key(name), []).append(label)
        self._loose = {key: labels[0] for key, labels in loose.items() if len(labels) == 1}

    def find(self, text: str) -> int | None:
        """The label ``text`` names, or None."""
        for table, key in ((self._exact, text), (self._slug, text), (self._loose, loose_key(text))):
            if key in table:
                return table[key]
        return None


@dataclass(frozen=True)
class FolderClass:
    """One class folder of an ImageFolder tree: its name and its images (sorted paths)."""

    name: str
    images: tuple[Path, ...]


def read_image_folder(root: Path | str) -> list[FolderClass]:
    """The class folders of ``root`` in sorted order (label = position when no class-names file is given).

    Hidden folders (``.cache``) are not classes; a class folder may be empty (it keeps its label).
    """
    root = Path(root)
    if not root.is_dir():
        raise ListFileError(str(root), "not a folder; expected an ImageFolder tree (one folder per class)")
    folders = sorted(p for p in _listdir(root) if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ListFileError(str(root), "no class folders; an ImageFolder tree holds one folder per class "
                                       "(root/<class name>/<images>)")
    return [FolderClass(folder.name, tuple(sorted(p for p in _listdir(folder)
                                                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)))
            for folder in folders]


def _listdir(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError as exc:
        raise ListFileError(str(folder), f"cannot list the folder ({exc.strerror or type(exc).__name__}); "
                                         "check that it exists and is readable") from None


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
