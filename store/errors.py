"""The one base class for "the user gave us something we cannot use": one line on stderr, exit status 2.

Contract:

- Every error that means *bad input, flag, setting or file* (not a bug, not a provider failure) subclasses
  :class:`UsageError`. Its message is the whole user interface: one line saying what is wrong, where
  (``file:line``, the flag, the setting) and how to fix it — no type name, no traceback.
- Entry points catch ``UsageError`` once, print ``error: <message>`` and return :data:`EXIT_USAGE`;
  :func:`usage_line` is that line. Subclasses keep their own names (``ConfigError``, ``DataError``, …) so
  callers can still tell them apart, and stay ``ValueError`` subclasses for code that catches those.
- Standard library only: the trainer imports it.
- The whole hierarchy — every ``UsageError`` subclass, ``ProviderError`` and its kinds, the internal
  errors that never reach a user — is drawn in ``agent/errors.py``, with the ``entry_point`` wrapper the
  agent's commands use to catch it once.

>>> class ShapeError(UsageError): ...
>>> usage_line(ShapeError("--size: must be WxH, got '12'"))
"error: --size: must be WxH, got '12'"
"""

from __future__ import annotations

import errno
import sqlite3

__all__ = ["EXIT_USAGE", "UsageError", "is_disk_full", "usage_line"]

EXIT_USAGE = 2


class UsageError(ValueError):
    """Bad input, flag, setting or file: one line for the user, exit status 2."""

    exit_code = EXIT_USAGE


def usage_line(exc: BaseException) -> str:
    """``error: <first line of the message>`` — what an entry point prints for a :class:`UsageError`."""
    text = str(exc).strip().splitlines()
    return f"error: {text[0] if text else type(exc).__name__}"


def is_disk_full(exc: BaseException) -> bool:
    """A write failed because the disk (or the user's quota) is full: ``ENOSPC`` / ``EDQUOT`` from the OS,
    or SQLite's "database or disk is full". Not the item's fault: the run stops, ``--resume`` continues.

    >>> is_disk_full(OSError(errno.ENOSPC, "No space left on device")), is_disk_full(OSError(errno.ENOENT, "x"))
    (True, False)
    """
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc)
