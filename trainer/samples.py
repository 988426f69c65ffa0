"""What the trainer trains and tests on: class names and labelled image paths, from any of three layouts.

Contract
- A data spec (``--train``, ``--generated``, ``--test``) is one of
  - an **ImageFolder** tree (a folder: one sub-folder per class, :func:`store.lists.read_image_folder`);
  - a **manifest** (``*.jsonl``, or a file whose first character is ``{``; paths relative to the manifest's
    folder), read with :func:`store.manifest.read_labelled_rows`: the agent's, or any tool's rows with at
    least ``path`` and ``label``;
  - a **list file** (ImageNet-LT style ``relative/path.jpg <label>``; paths relative to ``data_root``, which
    defaults to the list's folder);
  - an **HF ImageFolder** (``metadata.jsonl`` rows with ``file_name``: the file, or the folder that
    ``load_dataset("imagefolder", data_dir=DIR)`` takes), a folder of **parquet** shards or of **WebDataset**
    ``.tar`` shards (:mod:`trainer.formats`; ``python -m agent.export`` writes all three). Their images are
    read on demand from the shards (``Sample.part``), and their class list stands in for ``--class-names``.
- Labels (README "How labels are numbered"): the class names come from ``--class-names`` (label = line, or
  ``label<TAB>name``) or, without it, from the class folders of an ImageFolder ``--train`` in sorted order
  (torchvision's rule, the agent's ``--images`` rule). A list file's labels are taken as written. A class
  folder, and a manifest row's ``class_name`` when present, name their class: the label is that class's in
  the class names (:class:`store.lists.ClassIndex`: exact, slug, or loose match) — a row's own ``label`` is
  only used when the row has no ``class_name``. Rows whose label was corrected keep it in
  ``Sample.listed_label``; :func:`relabel_note` is the one summary line. A name that matches no class is
  a :class:`DataError` at ``file:line`` (or the folder).
- :func:`check_images` checks that files exist and, for manifest rows with a ``sha256``, that the file
  still has that hash; with ``skip_bad`` it also decodes every image, and drops and counts bad ones.
- Every problem with user input raises :class:`DataError` (a :class:`store.errors.UsageError`) whose
  message is one line: ``file:line: reason`` for a row, ``file: reason`` for a whole file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from store.errors import UsageError
from store.manifest import (
    ClassIndex,
    FolderClass,
    ListFileError,
    ManifestError,
    read_image_folder,
    read_labelled_rows,
)
from store.manifest import read_class_names as _read_class_names
from store.manifest import read_list_file as _read_list_entries

_WORKER_HEADER = "Caught DataError in DataLoader worker"


class DataError(UsageError):
    """Unusable input data; the message is one line that names the file (and line) and the fix.

    torch's DataLoader re-raises an error of a worker process as ``DataError(<header + traceback text>)``;
    the constructor keeps only the worker's own message from that text, so the error stays one line.

    >>> str(DataError("Caught DataError in DataLoader worker process 0.\\nOriginal Traceback (most recent "
    ...               "call last):\\n  File x\\ntrainer.samples.DataError: a.txt:3: cannot read image\\n"))
    'a.txt:3: cannot read image'
    """

    def __init__(self, message: str) -> None:
        if message.startswith(_WORKER_HEADER):
            original = [ln.split("DataError: ", 1)[1] for ln in message.splitlines() if "DataError: " in ln]
            message = original[-1] if original else message.splitlines()[0]
        super().__init__(message)


@dataclass(frozen=True)
class Sample:
    """One labelled image. ``where`` is ``file:line`` of the row that listed it (the path for a folder)."""

    path: Path
    label: int
    where: str
    sha256: str | None = None  # a manifest row's hash of the file, checked by check_images
    listed_label: int | None = None  # the row's own label, when its class_name gave another one
    part: tuple[int, int] | None = None  # inside a container ``path`` (trainer.formats): tar (offset, size),
    # parquet (row group, row); None: ``path`` is the image file itself

    def open(self) -> Image.Image:
        """The image, not yet decoded (``PIL.Image.open`` of the file, or of its bytes inside a container)."""
        if self.part is None:
            return Image.open(self.path)
        from trainer.formats import open_member

        return open_member(self.path, self.part)


@dataclass(frozen=True)
class Classes:
    """The class names (index = label) and where they came from, for messages."""

    names: tuple[str, ...]
    source: str  # "--class-names names.txt", "the class folders of --train data/train", ...
    index: ClassIndex = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", ClassIndex(self.names))


@dataclass
class Listing:
    """The samples of one data spec and notes worth one line each (fields a manifest has that are not read)."""

    samples: list[Sample]
    notes: list[str] = field(default_factory=list)


def read_class_names(path: Path | str) -> list[str]:
    """Read a class-names file: ``label<TAB>name`` lines, or one name per line (line index = label).

    Both ``"1<TAB>dog\\n0<TAB>cat\\n"`` and ``"cat\\ndog\\n"`` give ``["cat", "dog"]``
    (:func:`store.manifest.read_class_names`, with :class:`DataError` for its errors).
    """
    try:
        return _read_class_names(path)
    except ListFileError as exc:
        raise _data_error(exc) from None


def load_classes(class_names: str | None, train: str) -> Classes:
    """The run's classes: ``--class-names`` when given, else the sorted class folders of an ImageFolder ``--train``."""
    if class_names is not None:
        return Classes(tuple(read_class_names(class_names)), f"--class-names {class_names}")
    if Path(train).is_dir():
        from trainer.formats import detect, export_names

        if detect(Path(train)) is not None:
            names = export_names(Path(train))
            if not names:
                raise DataError(f"--class-names FILE is needed: --train {train} carries no class list "
                                f"(python -m agent.export writes one in ltgc-export.json)")
            return Classes(tuple(names), f"the class list of --train {train}")
        return Classes(tuple(c.name for c in _image_folder(Path(train))), f"the class folders of --train {train}")
    raise DataError(f"--class-names FILE is needed: --train {train} is not an ImageFolder (only an ImageFolder's "
                    f"sorted folder names can stand in for the class names)")


def read_samples(spec: Path | str, classes: Classes | Sequence[str],
                 data_root: Path | str | None = None) -> list[Sample]:
    """The samples of a list file, manifest or ImageFolder (:func:`read_listing` without its notes)."""
    return read_listing(spec, classes, data_root).samples


def read_listing(spec: Path | str, classes: Classes | Sequence[str],
                 data_root: Path | str | None = None) -> Listing:
    """Read a data spec into samples labelled by ``classes`` (see the module docstring)."""
    spec = Path(spec)
    known = classes if isinstance(classes, Classes) else Classes(tuple(classes), "the class names")
    if spec.is_dir():
        from trainer.formats import detect, read_layout

        layout = detect(spec)
        listing = read_layout(spec, layout, known) if layout else Listing(_read_folder(spec, known))
    elif not spec.is_file():
        raise DataError(f"{spec}: no such file or folder (expected a list file 'path label', a manifest .jsonl "
                        f"or an ImageFolder tree)")
    elif is_manifest(spec) and _is_hf_metadata(spec):
        from trainer.formats import read_hf_metadata

        listing = read_hf_metadata(spec, known)
    elif is_manifest(spec):
        listing = _read_manifest(spec, known)
    else:
        listing = Listing(read_list_file(spec, data_root))
    if not listing.samples:
        raise DataError(f"{spec}: no images listed")
    for s in listing.samples:
        if s.label >= len(known.names):
            raise DataError(f"{s.where}: label {s.label} is out of range: {known.source} has "
                            f"{len(known.names)} classes (labels 0..{len(known.names) - 1})")
    return listing


def is_manifest(path: Path) -> bool:
    """A manifest is a ``.jsonl`` file, or any file whose first non-blank character is ``{``."""
    if path.suffix == ".jsonl":
        return True
    return _head(path).lstrip().startswith("{")


def _is_hf_metadata(path: Path) -> bool:
    """An HF ImageFolder ``metadata.jsonl`` (rows name a ``file_name``, not a ``path``), not a manifest."""
    import json

    first = _head(path).lstrip().split("\n", 1)[0]
    try:
        row = json.loads(first)
    except ValueError:
        return False  # too long for the head, or not JSON: the manifest reader says what is wrong
    return isinstance(row, dict) and "file_name" in row and "path" not in row


def read_list_file(path: Path | str, data_root: Path | str | None = None) -> list[Sample]:
    """Parse ``path label`` lines (:func:`store.manifest.read_list_file`); paths are joined to ``data_root``."""
    path = Path(path)
    root = Path(data_root) if data_root is not None else path.parent
    try:
        entries = _read_list_entries(path)
    except ListFileError as exc:
        raise _data_error(exc) from None
    if not entries:
        raise DataError(f"{path}: no samples listed (expected lines 'relative/path.jpg <label>')")
    return [Sample(root / e.path, e.label, e.where) for e in entries]


def relabel_note(samples: Sequence[Sample], source: str) -> str | None:
    """The one line that says how many manifest rows were trained under their class_name's label, or None."""
    moved = [s for s in samples if s.listed_label is not None]
    if not moved:
        return None
    first = moved[0]
    return (f"{len(moved)} manifest row(s) carry a label that {source} gives another class: each is labelled by "
            f"its class_name (first: {first.where}: label {first.listed_label} -> {first.label})")


def class_counts(samples: Sequence[Sample], num_classes: int) -> list[int]:
    """Images per class. ``[Sample(.., 0, ..), Sample(.., 2, ..)], 3 -> [1, 0, 1]``."""
    counts = [0] * num_classes
    for s in samples:
        counts[s.label] += 1
    return counts


def check_images(samples: Sequence[Sample], skip_bad: bool) -> tuple[list[Sample], list[str]]:
    """Return (usable samples, problems). Without ``skip_bad`` the first bad file raises.

    Bad: a missing file, or one whose content no longer has its manifest row's sha256. With ``skip_bad``
    every image is also opened and decoded, so corrupt files are dropped up front rather than mid-epoch.
    """
    kept: list[Sample] = []
    problems: list[str] = []
    for s in samples:
        problem, fix = None, ""
        if not s.path.is_file():
            problem, fix = f"{s.where}: image not found: {s.path}", "fix the path or --data-root"
        elif s.sha256 is not None and _sha256(s.path) != s.sha256:
            problem = f"{s.where}: image {s.path} does not have the row's sha256 (the file changed after the " \
                      f"manifest was written)"
            fix = "restore the file, or drop the row's sha256 if the change is wanted"
        elif skip_bad:
            problem = _decode_problem(s)
        if problem is None:
            kept.append(s)
        elif skip_bad:
            problems.append(problem)
        else:
            raise DataError(f"{problem} ({fix}, or pass --skip-bad-images)")
    return kept, problems


def subset_round_robin(samples: Sequence[Sample], limit: int) -> list[Sample]:
    """First ``limit`` samples taken class by class in turn, so a quick test subset keeps every class.

    Labels ``[0, 0, 0, 1, 1, 2]`` with ``limit=4`` give labels ``[0, 1, 2, 0]``.
    """
    if limit <= 0 or limit >= len(samples):
        return list(samples)
    by_class: dict[int, list[Sample]] = {}
    for s in samples:
        by_class.setdefault(s.label, []).append(s)
    queues = [by_class[k] for k in sorted(by_class)]
    picked: list[Sample] = []
    depth = 0
    while len(picked) < limit:
        for q in queues:
            if depth < len(q) and len(picked) < limit:
                picked.append(q[depth])
        depth += 1
    return picked


def _read_folder(root: Path, classes: Classes) -> list[Sample]:
    samples: list[Sample] = []
    for folder in _image_folder(root):
        label = classes.index.find(folder.name)
        if label is None:
            raise DataError(f"{root / folder.name}: class folder {folder.name!r} matches no class of "
                            f"{classes.source}; rename the folder to a class name (or its slug) or add the class")
        samples += [Sample(path, label, str(path)) for path in folder.images]
    return samples


def _read_manifest(path: Path, classes: Classes) -> Listing:
    try:
        rows, unread = read_labelled_rows(path)
    except ManifestError as exc:
        raise DataError(str(exc)) from None
    samples = []
    for row in rows:
        label, listed = row.label, None
        if row.class_name is not None:  # the name is authoritative: labels are numbered differently by tools
            found = classes.index.find(row.class_name)
            if found is None:
                raise DataError(f"{row.where}: class_name {row.class_name!r} is not a class of {classes.source}; "
                                f"add it there or fix the row")
            label, listed = found, (row.label if row.label != found else None)
        samples.append(Sample(row.resolve(path.parent), label, row.where, row.sha256, listed))
    notes = [f"{path}: field(s) {', '.join(unread)} are not used by the trainer"] if unread else []
    return Listing(samples, notes)


def _image_folder(root: Path) -> list[FolderClass]:
    try:
        return read_image_folder(root)
    except ListFileError as exc:
        raise DataError(str(exc)) from None


def _decode_problem(s: Sample) -> str | None:
    try:
        with s.open() as im:
            im.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        return f"{s.where}: cannot read image {s.path}: {reason_of(exc)}"
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _data_error(exc: ListFileError) -> DataError:
    if exc.label is not None:  # the trainer's wording for a bad label since issue 4 (users grep for it)
        return DataError(f"{exc.where}: label must be a non-negative integer, got {exc.label!r}")
    return DataError(str(exc))


def _head(path: Path) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read(4096)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None


def reason_of(exc: BaseException) -> str:
    """The first line of an exception's message (at most 160 characters), for a one-line error."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]
