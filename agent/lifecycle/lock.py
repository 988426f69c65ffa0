"""One ``agent.run`` per run folder: an advisory lock that a dead process cannot keep.

Contract:

- ``RunLock(out_dir)`` is a context manager. Entering creates ``out_dir`` (if needed) and takes an
  exclusive, non-blocking ``fcntl.flock`` on ``out_dir/run.lock``; leaving releases it. A second holder —
  another process, or another ``RunLock`` in this process — gets :class:`RunLocked` at once, with one line
  naming the folder and the holder's pid, and saying what to do.
- Why ``flock``: the kernel drops the lock when the holder's file descriptor closes, and so when the
  process dies for any reason (SIGKILL, OOM, power loss of a container), so a crashed run never blocks
  its own ``--resume``. The pid written into the file is only for the message; it is never trusted to
  decide anything (pids are reused).
- The lock file stays after a run (removing it would race with a second run taking it); it holds no
  secret, only ``pid`` and the start time.
- Only POSIX file systems are supported; a file system that refuses ``flock`` (some network mounts)
  gives :class:`RunLocked` with that reason instead of running unprotected.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from agent.lifecycle.folder import LOCK
from store.errors import UsageError

__all__ = ["LOCK_NAME", "RunLock", "RunLocked", "holder"]

LOCK_NAME = LOCK  # the file's name is the run folder's (agent/lifecycle/folder.py)


class RunLocked(UsageError):
    """The run folder is in use (or cannot be locked); the message is one line: what, where, how to fix.
    A ``UsageError`` (exit 2): the fix is the user's — wait, stop the other run, or pick another ``--out``."""

    @staticmethod
    def message(out_dir: Path, holder_text: str) -> str:
        """``--out DIR: in use by another agent.run (pid N since ...); ...`` — the one wording."""
        return (f"--out {out_dir}: in use by another agent.run ({holder_text}); wait for it to finish "
                "(or stop it), or pass a different --out")


class RunLock:
    """Exclusive lock on a run folder for the lifetime of one run (see the module docstring).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d, RunLock(Path(d)):
    ...     try:
    ...         RunLock(Path(d)).acquire()
    ...     except RunLocked as exc:
    ...         print("refused")
    refused
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`RunLocked`; never waits."""
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise RunLocked(f"--out {self.out_dir}: cannot create {LOCK_NAME} ({exc.strerror}); "
                            "choose a writable run folder") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunLocked(RunLocked.message(self.out_dir, holder.strip(" ()") or "another process")) from None
            raise RunLocked(f"--out {self.out_dir}: cannot lock {LOCK_NAME} ({exc.strerror}); "
                            "use a run folder on a local file system") from None
        # Holder details for the next refusal's message; written only once the lock is ours.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Release the lock (closing the descriptor is what releases it); idempotent."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    """`` (pid 123 since ...)`` from the lock file, or ``""`` when it says nothing usable."""
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return f" ({text.splitlines()[0]})" if text.startswith("pid ") else ""


def holder(out_dir: Path) -> str | None:
    """Whether an ``agent.run`` holds ``out_dir``'s lock right now, without writing anything: ``None`` when
    nobody does (finished, interrupted or killed), else the holder's line (``"pid 123 since ..."``)."""
    path = Path(out_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # no lock file: no run ever started here
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return _read_holder(fd).strip(" ()") or "another process"
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
