"""Where the trainer writes: ``--out`` checked before anything loads, and a failed write said in one line.

Contract
- :func:`check_out_folder` runs first: ``--out`` that is a file, that lies under a file, or whose nearest
  existing folder is not writable is an :class:`OutputError` (exit 2, nothing written, nothing loaded).
- :func:`writing` wraps every write of an output: an ``OSError`` (a full disk, a permission refused), the
  ``RuntimeError`` with which ``torch.save`` reports a failed file write, or an error of a Rust writer
  (safetensors, under peft's adapter save) that carries ``(os error N)``, becomes one :class:`OutputError`
  line naming the file, the reason, the free space left, and what is safe. Anything else is re-raised. Exit status 2 when nothing had
  been done yet (before the first epoch), 1 once work was done that could not be saved.
- Every file is written whole or not at all (``store.manifest.atomic_write_*``, the checkpoint's temp folder
  + rename), so after the error the previous ``checkpoints/last``, ``metrics.json`` and ``train_log.jsonl``
  are intact and ``--resume`` continues once there is space again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from store.errors import UsageError
from store.manifest import atomic_write_text

EXIT_NOT_SAVED = 1
# How torch.save words a failed write (its C++ stream writer raises RuntimeError, not OSError):
# measured on a full tmpfs with torch 2.14: "[enforce fail at inline_container.cc:…] . unexpected pos …",
# "basic_ios::clear: iostream error"; and "PytorchStreamWriter failed writing file …: file write failed".
_TORCH_WRITE_FAILURES = ("inline_container", "iostream error", "file write failed", "PytorchStreamWriter")
# How Rust's std::io::Error ends its text, e.g. safetensors (peft's adapter save) on a full tmpfs:
# "Error while serializing: I/O error: No space left on device (os error 28)" (a SafetensorError).
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


class OutputError(UsageError):
    """An output that cannot be written; one line. ``exit_code`` is 2 before work was done, else 1."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def check_out_folder(out: Path, flag: str = "--out") -> None:
    """Refuse an output folder that cannot be one, before anything is loaded (see the module docstring)."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{flag} {out}: is a file, not a folder; choose another {flag}")
    existing = out
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise OutputError(f"{flag} {out}: {existing} is a file, so the folder cannot be created; "
                          f"choose another {flag}")
    if existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {out}: the folder {existing} is not writable; choose another {flag} "
                          f"or fix its permissions")


@contextmanager
def writing(target: Path, *, done_work: bool, safe: str) -> Iterator[None]:
    """Turn a failed write of ``target`` into one :class:`OutputError` line that ends with ``safe``."""
    try:
        yield
    except Exception as exc:
        reason = write_failure(exc)
        if reason is None:
            raise
        raise _failure(target, reason, done_work, safe) from None


def write_failure(exc: BaseException) -> str | None:
    """Why a write failed, if ``exc`` is a failed write (see the module docstring); else None.

    >>> write_failure(OSError(28, "No space left on device"))
    'No space left on device'
    >>> write_failure(Exception("Error while serializing: I/O error: No space left on device (os error 28)"))
    'No space left on device'
    >>> write_failure(RuntimeError("CUDA out of memory")) is None
    True
    """
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    rust = _RUST_OS_ERROR.search(str(exc))
    if rust:
        return os.strerror(int(rust.group(1)))
    if isinstance(exc, RuntimeError) and any(marker in str(exc) for marker in _TORCH_WRITE_FAILURES):
        return "the write failed"
    return None


def write_log_row(path: Path, row: dict[str, Any]) -> None:
    """Rewrite ``train_log.jsonl`` atomically with ``row`` after the rows of earlier epochs.

    Rows of later epochs (left by a run whose checkpoint of that epoch was never written) are dropped.
    """
    kept: list[str] = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("epoch", 0) < row["epoch"]:
                    kept.append(line)
            except (ValueError, AttributeError):
                continue  # a torn line of an older version that appended: not a row
    atomic_write_text(path, "".join(f"{line}\n" for line in [*kept, json.dumps(row)]))


def _failure(target: Path, reason: str, done_work: bool, safe: str) -> OutputError:
    return OutputError(f"cannot write {target}: {reason}{_free_space(target)}; {safe}",
                       EXIT_NOT_SAVED if done_work else 2)


def _free_space(target: Path) -> str:
    folder = target
    while not folder.is_dir() and folder.parent != folder:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return ""
    return f" ({_size(free)} free on that disk)"


def _size(n: int) -> str:
    """``512 -> '512 B'``, ``2_500_000 -> '2.4 MiB'``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
