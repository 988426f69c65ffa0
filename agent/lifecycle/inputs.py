"""Read the run's inputs: the tail classes, their real images, and every class name of the dataset.

Contract:

- ``tail.txt`` (docs/DESIGN.md §8): one class per line, a name or ``label<TAB>name``; ``#`` starts a comment;
  blank lines are ignored; a class listed twice is kept once, with a warning.
- Images come from one of two sources:
  - ``--images DIR``: an ImageFolder tree, one folder per class. A class matches the folder named exactly
    like it, or like its slug (``store.slug.slugify``), or equal after ``agent.graph.checks.normalise`` with ``_``
    read as a space (``red_fox`` for "red fox"). Without other labels, label = index of the folder in the
    sorted folder list (torchvision's ImageFolder convention).
  - ``--train-list FILE --data-root DIR``: ImageNet-LT style lines ``relative/path.jpg <label>``.
- ``--class-names FILE``: ``label<TAB>name`` lines, or one name per line (label = index among non-blank,
  non-comment lines). It names every class of the dataset; softmax scoring uses all of them. Both it and
  ``--train-list`` are read by :mod:`store.lists`, the reader the trainer and the data tools share.
- ``check_images(inputs, strict=)`` (a separate step: it opens every image) checks each real image with
  ``PIL`` ``verify`` (headers and checksums, no full decode). A corrupt one is left out of its class with
  a warning, or, with ``strict=True`` (``--strict``), is an ``InputError``. A tail class with no
  readable image is an ``InputError``: describe would have nothing to describe, and a run should not pay
  for a class whose images were forgotten or mistyped.
- Every problem raises ``InputError`` with one line: what is wrong, where (``file:line``), how to fix it.

The result is plain data (``Inputs``); nothing here touches the network or a model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image

from agent.graph.checks import normalise
from store import lists
from store.errors import UsageError
from store.lists import ListFileError, read_image_folder, read_list_file
from store.slug import slugify

__all__ = ["ClassSpec", "InputError", "Inputs", "check_images", "image_problem", "load_inputs", "read_class_map",
           "read_tail"]

_LABELLED = re.compile(r"^\s*(\d+)\t(.+?)\s*$")


class InputError(UsageError):
    """A bad input file or flag; the message is one line saying what, where and how to fix it."""


@dataclass(frozen=True)
class TailEntry:
    name: str
    label: int | None
    where: str  # "tail.txt:3", for error messages


@dataclass(frozen=True)
class ClassSpec:
    """One tail class: its name, integer label and real images (absolute paths, sorted)."""

    name: str
    label: int
    images: tuple[str, ...]


@dataclass(frozen=True)
class Inputs:
    classes: tuple[ClassSpec, ...]
    class_names: dict[int, str]  # every class of the dataset that we know of, by label
    warnings: tuple[str, ...]


def load_inputs(
    classes_file: Path,
    *,
    images_dir: Path | None = None,
    train_list: Path | None = None,
    data_root: Path | None = None,
    class_names_file: Path | None = None,
) -> Inputs:
    """Resolve tail classes to labels and image paths (see the module docstring)."""
    if (images_dir is None) == (train_list is None):
        raise InputError("give exactly one image source: --images DIR or --train-list FILE --data-root DIR")
    if train_list is not None and data_root is None:
        raise InputError("--train-list needs --data-root DIR (the folder its relative paths start from)")
    entries, warnings = read_tail(classes_file)
    known = read_class_map(class_names_file) if class_names_file else {}
    if images_dir is not None:
        classes, names = _from_image_folder(images_dir, entries, known)
    else:
        assert train_list is not None and data_root is not None
        classes, names = _from_train_list(train_list, data_root, entries, known)
    return Inputs(tuple(classes), names, tuple(warnings))


def read_tail(path: Path) -> tuple[list[TailEntry], list[str]]:
    """Parse ``tail.txt``; returns the entries (first occurrence wins) and duplicate warnings."""
    lines = _read_lines(path, "--classes")
    entries: list[TailEntry] = []
    warnings: list[str] = []
    seen: dict[str, str] = {}
    for lineno, raw in enumerate(lines, start=1):
        text = raw.split("#", 1)[0]  # a comment may follow a class on the same line
        if not text.strip():
            continue
        where = f"{path}:{lineno}"
        match = _LABELLED.match(text)
        name, label = (match.group(2), int(match.group(1))) if match else (text.strip(), None)
        if "\t" in name:
            raise InputError(f"{where}: expected 'name' or 'label<TAB>name', got {raw.strip()!r}")
        if name in seen:
            warnings.append(f"{where}: class {name!r} is listed again (first at {seen[name]}); using it once")
            continue
        seen[name] = where
        entries.append(TailEntry(name, label, where))
    if not entries:
        raise InputError(f"{path}: no classes listed; write one class name (or label<TAB>name) per line")
    return entries, warnings


def read_class_map(path: Path) -> dict[int, str]:
    """``{label: name}`` from ``label<TAB>name`` lines, or one name per line (label = index among the non-blank
    lines); labels may have gaps. :func:`store.lists.read_class_map` with :class:`InputError` for its errors
    (the same name returns the same shape everywhere: ``read_class_names`` is the gap-free ``list``)."""
    try:
        return lists.read_class_map(path)
    except ListFileError as exc:
        raise InputError(f"--class-names {exc}") from None


def _from_image_folder(
    root: Path, entries: list[TailEntry], known: dict[int, str]
) -> tuple[list[ClassSpec], dict[int, str]]:
    try:  # the one ImageFolder reader (store.lists): the trainer numbers folders the same way
        tree = {folder.name: folder.images for folder in read_image_folder(root)}
    except ListFileError as exc:
        raise InputError(f"--images {exc}") from None
    folders = list(tree)
    names = dict(known) if known else dict(enumerate(folders))
    classes = []
    for entry in entries:
        folder = _match_folder(entry.name, folders)
        if folder is None:
            raise InputError(
                f"{entry.where}: class {entry.name!r} has no folder in {root} (looked for "
                f"{entry.name!r} and {slugify(entry.name)!r}); create it or fix the name"
            )
        label = _label_for(entry, known, fallback=folders.index(folder) if not known else None)
        images = sorted(str(p.resolve()) for p in tree[folder])
        classes.append(ClassSpec(entry.name, label, tuple(images)))
    _check_unique_labels(classes, entries)
    for spec in classes:
        names.setdefault(spec.label, spec.name)
    return classes, names


def _from_train_list(
    list_path: Path, data_root: Path, entries: list[TailEntry], known: dict[int, str]
) -> tuple[list[ClassSpec], dict[int, str]]:
    if not data_root.is_dir():
        raise InputError(f"--data-root {data_root}: not a folder; pass the folder the list's paths start from")
    labels = {e.name: _label_for(e, known, fallback=None) for e in entries}
    wanted = set(labels.values())
    by_label: dict[int, list[str]] = {label: [] for label in wanted}
    try:
        listed = read_list_file(list_path)
    except ListFileError as exc:
        raise InputError(f"--train-list {exc}") from None
    for entry in listed:
        if entry.label in wanted:
            image = (data_root / entry.path).resolve()
            if not image.is_file():
                raise InputError(f"{entry.where}: image {image} does not exist; check --data-root")
            by_label[entry.label].append(str(image))
    classes = [ClassSpec(e.name, labels[e.name], tuple(sorted(by_label[labels[e.name]]))) for e in entries]
    _check_unique_labels(classes, entries)
    names = dict(known)
    for spec in classes:
        names.setdefault(spec.label, spec.name)
    return classes, names


def _label_for(entry: TailEntry, known: dict[int, str], *, fallback: int | None) -> int:
    if entry.label is not None:
        if known and entry.label in known and known[entry.label] != entry.name:
            raise InputError(
                f"{entry.where}: label {entry.label} is {known[entry.label]!r} in --class-names, not "
                f"{entry.name!r}; fix one of the two files"
            )
        return entry.label
    if known:
        matches = [label for label, name in known.items() if name == entry.name]
        if not matches:
            raise InputError(f"{entry.where}: class {entry.name!r} is not in --class-names; check the spelling")
        return matches[0]
    if fallback is None:
        raise InputError(
            f"{entry.where}: class {entry.name!r} has no label; write 'label<TAB>name' or pass --class-names FILE"
        )
    return fallback


def _match_folder(name: str, folders: list[str]) -> str | None:
    for candidate in (name, slugify(name)):
        if candidate in folders:
            return candidate
    key = normalise(name)
    loose = [f for f in folders if normalise(f.replace("_", " ")) == key]
    return loose[0] if len(loose) == 1 else None


def _check_unique_labels(classes: list[ClassSpec], entries: list[TailEntry]) -> None:
    seen: dict[int, str] = {}
    for spec, entry in zip(classes, entries, strict=True):
        if spec.label in seen:
            raise InputError(
                f"{entry.where}: class {spec.name!r} has label {spec.label}, already used by {seen[spec.label]!r}"
            )
        seen[spec.label] = spec.name


def check_images(inputs: Inputs, *, strict: bool = False) -> Inputs:
    """Drop (with a warning) or refuse (``strict``) corrupt images; refuse a class left with none."""
    kept = []
    warnings = list(inputs.warnings)
    for spec in inputs.classes:
        good = []
        for path in spec.images:
            problem = image_problem(Path(path))
            if problem is None:
                good.append(path)
            elif strict:
                raise InputError(f"{path}: {problem}; replace or delete it (or drop --strict to skip it)")
            else:
                warnings.append(f"{path}: {problem}; skipped (--strict stops instead)")
        if not good:
            what = "no readable images" if spec.images else "no images"
            raise InputError(f"--classes: class {spec.name!r} has {what}; add its real images "
                             "or remove the class from the list")
        kept.append(replace(spec, images=tuple(good)))
    return Inputs(tuple(kept), inputs.class_names, tuple(warnings))


def image_problem(path: Path) -> str | None:
    """None for an image PIL can open and verify; else a short reason (``"not a readable image (...)"``)."""
    try:
        with Image.open(path) as img:
            img.verify()  # structure and checksums, without decoding every pixel
    except Exception as exc:  # PIL raises many types for broken files; all mean "unreadable"
        return f"not a readable image ({type(exc).__name__})"
    return None


def _read_lines(path: Path, flag: str) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise InputError(f"{flag} {path}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{flag} {path}: is a folder, expected a text file") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{flag} {path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"{flag} {path}: cannot read ({exc.strerror})") from None
