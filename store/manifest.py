"""Dataset manifest: the one file format shared by the agent (writer) and the trainer (reader).

A manifest is JSON Lines, one object per image (docs/DESIGN.md §8):

    {"path": "images/red-fox/3f2a....png", "label": 7, "class_name": "red fox",
     "source": "generated", "sha256": "3f2a...", "description": "A photo of the class red fox, ...",
     "score": 0.31, "round": 1, "run_id": "r1"}

- ``path`` is relative to the manifest's folder, or absolute.
- ``source`` is ``original`` or ``generated``; generated rows also carry ``description``, ``score``,
  ``round`` and ``run_id``.
- Rows are written atomically (temp file + rename) in a stable order (label, source, path), so the same
  rows always give the same bytes.
- The reader rejects a malformed row with ``file:line: reason`` (:class:`ManifestError`, a
  :class:`store.errors.UsageError`: one line, exit status 2).
- Two readers: :func:`read_manifest` is the agent's (every field above, strictly: what the agent writes, it
  reads back); :func:`read_labelled_rows` is the trainer's, for manifests written by any tool: only
  ``path`` and ``label`` are required; ``class_name`` and ``sha256`` are checked when present (the trainer
  uses them), every other field is optional and not read. Both keep the ``file:line`` errors and reject a
  second row for the same image.

This module imports only the standard library and :mod:`store.lists` (the same), whose list-file and
class-names readers it re-exports: the trainer depends on this module and on nothing else of ours.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from store.errors import UsageError
from store.lists import (
    ClassIndex,
    FolderClass,
    ListEntry,
    ListFileError,
    read_class_map,
    read_class_names,
    read_image_folder,
    read_list_file,
)

__all__ = ["ClassIndex", "FolderClass", "LabelledRow", "ListEntry", "ListFileError", "ManifestError", "ManifestRow",
           "atomic_write_bytes", "atomic_write_lines", "atomic_write_text", "parse_row", "read_class_map", "read_class_names",
           "read_image_folder", "read_labelled_rows", "read_list_file", "read_manifest", "write_manifest"]

SOURCES = ("original", "generated")
_GENERATED_FIELDS = ("description", "score", "round", "run_id")
_ALL_FIELDS = ("path", "label", "class_name", "source", "sha256", *_GENERATED_FIELDS)


class ManifestError(UsageError):
    """A manifest row or file that cannot be used; the message reads ``file:line: reason``."""


@dataclass(frozen=True)
class ManifestRow:
    """One image of a dataset manifest.

    >>> ManifestRow("a.png", 3, "cat", "original", "ab" * 32).source
    'original'
    """

    path: str
    label: int
    class_name: str
    source: str
    sha256: str
    description: str | None = None
    score: float | None = None
    round: int | None = None
    run_id: str | None = None

    def __post_init__(self) -> None:
        problem = _row_problem(self)
        if problem:
            raise ManifestError(problem)

    def to_json(self) -> str:
        """Canonical one-line JSON (fixed key order; ``None`` fields of original rows left out)."""
        # getattr, not dataclasses.asdict (a recursive deep copy, ~10x slower): every field is a scalar.
        data = {k: v for k in _ALL_FIELDS if (v := getattr(self, k)) is not None or k == "path"}
        return json.dumps(data, ensure_ascii=False)

    def resolve(self, manifest_dir: Path) -> Path:
        """The image's absolute path: ``path`` taken relative to the manifest's folder."""
        p = Path(self.path)
        return p if p.is_absolute() else manifest_dir / p

    def sort_key(self) -> tuple[int, int, str]:
        return (self.label, SOURCES.index(self.source), self.path)


def write_manifest(path: Path | str, rows: Iterable[ManifestRow]) -> int:
    """Write ``rows`` to ``path`` atomically, sorted by (label, source, path); returns the row count.

    Duplicate paths are an error: a manifest never lists one image twice.
    """
    path = Path(path)
    ordered = sorted(rows, key=ManifestRow.sort_key)
    seen: set[str] = set()
    for row in ordered:
        if row.path in seen:
            raise ManifestError(f"{path}: duplicate row for image {row.path!r}")
        seen.add(row.path)
    text = "".join(row.to_json() + "\n" for row in ordered)
    atomic_write_text(path, text)
    return len(ordered)


def read_manifest(path: Path | str) -> list[ManifestRow]:
    """Read and validate every row; the first bad row raises ``ManifestError('file:line: reason')``.

    A second row for an image already listed is a bad row too (``write_manifest`` never writes one).
    """
    path = Path(path)
    rows: list[ManifestRow] = []
    first_line: dict[str, int] = {}
    for lineno, line in _numbered_rows(path):
        row = parse_row(line, where=f"{path}:{lineno}")
        _check_new_path(row.path, lineno, first_line, path)
        rows.append(row)
    return rows


@dataclass(frozen=True)
class LabelledRow:
    """What the trainer reads of a manifest row: the image, its label and, when given, its class and hash."""

    path: str
    label: int
    class_name: str | None
    sha256: str | None
    where: str  # "file:line", for messages

    def resolve(self, manifest_dir: Path) -> Path:
        """The image's path: ``path`` taken relative to the manifest's folder (or absolute)."""
        p = Path(self.path)
        return p if p.is_absolute() else manifest_dir / p


def read_labelled_rows(path: Path | str) -> tuple[list[LabelledRow], list[str]]:
    """The trainer's reader: ``(rows, fields_not_read)`` for a manifest written by the agent or another tool.

    Required per row: ``path`` (non-empty string) and ``label`` (integer >= 0). Checked when present:
    ``class_name`` (non-empty string) and ``sha256`` (64 hex digits, stored lowercase). Fields the agent
    writes and the trainer does not need (``source``, ``description``, …) are accepted unread; any other
    field is returned in ``fields_not_read`` (sorted) so the caller can say once that it was ignored.

    >>> row = _labelled_row({"path": "a.png", "label": 2}, "m.jsonl:1")
    >>> (row.path, row.label, row.class_name, row.sha256)
    ('a.png', 2, None, None)
    """
    path = Path(path)
    rows: list[LabelledRow] = []
    unknown: set[str] = set()
    first_line: dict[str, int] = {}
    for lineno, line in _numbered_rows(path):
        where = f"{path}:{lineno}"
        obj = _json_object(line, where)
        unknown.update(set(obj) - set(_ALL_FIELDS))
        row = _labelled_row(obj, where)
        _check_new_path(row.path, lineno, first_line, path)
        rows.append(row)
    return rows, sorted(unknown)


def _labelled_row(obj: dict[str, Any], where: str) -> LabelledRow:
    missing = [k for k in ("path", "label") if k not in obj]
    if missing:
        raise ManifestError(f"{where}: missing field(s) {', '.join(missing)} (a row needs at least "
                            f"'path' and 'label')")
    path, label = obj["path"], obj["label"]
    class_name, sha = obj.get("class_name"), obj.get("sha256")
    if not isinstance(path, str) or not path:
        raise ManifestError(f"{where}: path must be a non-empty string")
    if not isinstance(label, int) or isinstance(label, bool) or label < 0:
        raise ManifestError(f"{where}: label must be an integer >= 0, got {label!r}")
    if class_name is not None and (not isinstance(class_name, str) or not class_name):
        raise ManifestError(f"{where}: class_name must be a non-empty string when given, got {class_name!r}")
    if sha is not None and not (isinstance(sha, str) and len(sha) == 64
                                and all(c in "0123456789abcdef" for c in sha.lower())):
        raise ManifestError(f"{where}: sha256 must be 64 hex digits when given")
    return LabelledRow(path, label, class_name, sha.lower() if isinstance(sha, str) else None, where)


def _numbered_rows(path: Path) -> list[tuple[int, str]]:
    """The non-blank lines of a manifest with their line numbers (a file problem is a ManifestError)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read manifest: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = raw[: exc.start].count(b"\n") + 1
        raise ManifestError(f"{path}:{lineno}: not UTF-8 text (byte {exc.start})") from None
    return [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _check_new_path(image: str, lineno: int, first_line: dict[str, int], path: Path) -> None:
    if image in first_line:
        raise ManifestError(f"{path}:{lineno}: duplicate row for image {image!r} "
                            f"(first at line {first_line[image]})")
    first_line[image] = lineno


def parse_row(line: str, where: str = "<row>") -> ManifestRow:
    """Parse one JSON line into a row, or raise ``ManifestError`` prefixed with ``where``."""
    obj = _json_object(line, where)
    unknown = sorted(set(obj) - set(_ALL_FIELDS))
    if unknown:
        raise ManifestError(f"{where}: unknown field(s) {', '.join(unknown)}")
    missing = [k for k in ("path", "label", "class_name", "source", "sha256") if k not in obj]
    if missing:
        raise ManifestError(f"{where}: missing field(s) {', '.join(missing)}")
    try:
        return ManifestRow(**obj)
    except ManifestError as exc:
        raise ManifestError(f"{where}: {exc}") from None


def _json_object(line: str, where: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{where}: not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: a row must be a JSON object")
    return obj


def _umask() -> int:
    # os.umask can only be read by setting it: set and restore once, at import, when no other thread of
    # ours writes files yet (a umask changed later by the process is not followed; nothing of ours does).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _umask()


def file_mode(umask: int = UMASK) -> int:
    """The mode ``open()`` gives a new file under ``umask``: what every atomic write ends with, instead of
    mkstemp's 0600 (a colleague or a training job under another user must be able to read the outputs;
    no secret is ever in them).

    >>> oct(file_mode(0o022)), oct(file_mode(0o077)), oct(file_mode(0o002))
    ('0o644', '0o600', '0o664')
    """
    return 0o666 & ~umask


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` via a temp file in the same folder and ``os.replace``."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_lines(path: Path, lines: Iterable[str]) -> int:
    """Write ``lines`` (each ending in a newline, UTF-8) to ``path`` as :func:`atomic_write_bytes` does, without
    holding them all: a 10^5-row manifest streams from its source. Returns the number of lines."""
    count = 0

    def write(fh: BinaryIO) -> None:
        nonlocal count
        for line in lines:
            fh.write(line.encode("utf-8"))
            count += 1

    _replace_atomically(path, write)
    return count


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``.

    Either the old file or the whole new one is there afterwards: a full disk or a crash mid-write leaves
    the old file (and no temp file) behind. The file gets the umask's mode (:func:`file_mode`), as a plain
    ``open()`` would give it.
    """
    _replace_atomically(path, lambda fh: fh.write(data))


def _replace_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """``write`` into a temp file beside ``path``, give it the umask's mode, sync, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fchmod(fh.fileno(), file_mode())  # mkstemp made it 0600
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# one regex, not a generator over 64 characters: the check runs for every row (10^5 a run at K = 300)
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _row_problem(row: ManifestRow) -> str | None:
    # Plain ifs: a reason is formatted only for a row that fails (every row of a run is checked).
    if not (isinstance(row.path, str) and row.path):
        return "path must be a non-empty string"
    if not (isinstance(row.label, int) and not isinstance(row.label, bool) and row.label >= 0):
        return f"label must be an integer >= 0, got {row.label!r}"
    if not (isinstance(row.class_name, str) and row.class_name):
        return "class_name must be a non-empty string"
    if row.source not in SOURCES:
        return f"source must be one of {', '.join(SOURCES)}, got {row.source!r}"
    if not (isinstance(row.sha256, str) and _SHA256.fullmatch(row.sha256)):
        return "sha256 must be 64 lowercase hex digits"
    if row.source == "generated":
        missing = [k for k in _GENERATED_FIELDS if getattr(row, k) is None]
        if missing:
            return f"generated row lacks {', '.join(missing)}"
        if not isinstance(row.description, str):
            return "description must be a string"
        if not isinstance(row.score, (int, float)) or isinstance(row.score, bool) or not math.isfinite(row.score):
            return f"score must be a finite number, got {row.score!r}"
        if not isinstance(row.round, int) or isinstance(row.round, bool) or row.round < 0:
            return f"round must be an integer >= 0, got {row.round!r}"
        if not isinstance(row.run_id, str):
            return "run_id must be a string"
    return None

