"""Content-addressed blob store: each image is stored once, under its own sha256.

Contract (docs/INTERFACES.md, ``store/blobs.py``):

- Layout: ``root/<first two hex digits>/<sha256>.<ext>``, e.g. ``blobs/3f/3f2a...e1.png``; the
  two-digit fan-out keeps folders small on ImageNet-scale runs.
- ``put`` is atomic: bytes go to a temp file in the *same* folder (so the rename never crosses a file
  system), are fsynced, then ``os.replace``d onto the final name. A reader therefore sees a complete
  blob or none; a writer killed mid-write can leave only a ``.<sha>.*.tmp`` file, which ``find`` ignores.
- ``put`` is idempotent: a blob already present with the right size is not rewritten, so concurrent
  writers of the same bytes (threads or processes) are harmless.
- ``ext`` is validated (``[a-z0-9]{1,5}``, one leading dot and upper case tolerated) and ``sha`` must be
  64 lowercase hex digits: neither can steer a path outside ``root``.

The store is synchronous (files are small); code on an event loop may wrap calls in ``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from store.errors import UsageError
from store.manifest import file_mode

__all__ = ["BlobError", "BlobStore", "is_sha256", "normalise_ext"]

_EXT_RE = re.compile(r"[a-z0-9]{1,5}")
_SHA_RE = re.compile(r"[0-9a-f]{64}")


class BlobError(UsageError):
    """A bad blob request: invalid extension or hash, or a blob that is not stored."""


def normalise_ext(ext: str) -> str:
    """``'.PNG' -> 'png'``; anything but 1-5 letters/digits raises ``BlobError``.

    >>> normalise_ext(".PNG")
    'png'
    """
    clean = ext[1:] if ext.startswith(".") else ext
    clean = clean.lower()
    if not _EXT_RE.fullmatch(clean):
        raise BlobError(f"blob extension {ext!r} is invalid: use 1-5 letters or digits, e.g. 'png'")
    return clean


class BlobStore:
    """Files named by their content hash under ``root``; see the module docstring."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def put(self, data: bytes, ext: str) -> str:
        """Store ``data`` (if not already stored) and return its sha256 hex digest."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise BlobError(f"blob data must be bytes, got {type(data).__name__}")
        ext = normalise_ext(ext)
        sha = hashlib.sha256(data).hexdigest()
        final = self.path(sha, ext)
        if _complete(final, len(data)):
            return sha
        final.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write_bytes(final, bytes(data), prefix=f".{sha}.")
        return sha

    def path(self, sha: str, ext: str) -> Path:
        """Where the blob ``sha`` with extension ``ext`` lives (whether or not it exists)."""
        _check_sha(sha)
        return self.root / sha[:2] / f"{sha}.{normalise_ext(ext)}"

    def find(self, sha: str) -> Path | None:
        """The stored file for ``sha`` whatever its extension, or ``None``."""
        return self.find_many([sha]).get(sha)

    def find_many(self, shas: Iterable[str]) -> dict[str, Path]:
        """``find`` for many hashes, listing each fan-out folder once: ``{sha: path}`` of those stored.

        Invalid hashes raise ``BlobError`` like ``find``. A report of thousands of images costs one
        ``listdir`` per folder instead of one per image.
        """
        wanted: dict[str, set[str]] = {}
        for sha in shas:
            _check_sha(sha)
            wanted.setdefault(sha[:2], set()).add(sha)
        found: dict[str, Path] = {}
        # A plain listdir + name test, not Path.glob: glob compiles a new pattern for every hash, which made
        # lookups the largest CPU cost of a warm rerun (scripts/bench/bench_agent.py). Temp files start with a
        # dot, so their name never starts with a hash: a half-written blob is invisible.
        for shard, group in wanted.items():
            folder = self.root / shard
            try:
                names = sorted(os.listdir(folder))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for name in names:  # sorted: the same file as ``find`` when one hash has two extensions
                sha, dot, _ = name.partition(".")
                if dot and sha in group and sha not in found:
                    found[sha] = folder / name
        return found

    def exists(self, sha: str) -> bool:
        """Whether a blob with this hash is stored."""
        return self.find(sha) is not None

    def read(self, sha: str) -> bytes:
        """The bytes of blob ``sha``; ``BlobError`` if it is not stored."""
        found = self.find(sha)
        if found is None:
            raise BlobError(f"blob {sha} is not in {self.root}")
        return found.read_bytes()


def is_sha256(text: object) -> bool:
    """Whether ``text`` is a blob hash: 64 lowercase hex digits (``is_sha256("ab") -> False``)."""
    return isinstance(text, str) and _SHA_RE.fullmatch(text) is not None


def _check_sha(sha: str) -> None:
    if not is_sha256(sha):
        raise BlobError(f"blob hash {sha!r} is invalid: expected 64 lowercase hex digits (a sha256)")


def _complete(path: Path, size: int) -> bool:
    """True if ``path`` holds a blob of the expected size (content is implied by the name)."""
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False


def _atomic_write_bytes(final: Path, data: bytes, *, prefix: str) -> None:
    """Write via temp file + fsync + ``os.replace`` in ``final``'s folder; no temp file survives errors."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=final.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; blobs are ordinary data files, readable like any other output.
        os.chmod(tmp, file_mode())
        os.replace(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
