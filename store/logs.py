"""What a command-line run prints through :mod:`logging`: the project's own words, each thing once.

Contract:

- :func:`cli_logging` installs one handler on the root logger (stderr, format ``warning: <message>``)
  before any library logs, so Python's automatic ``basicConfig`` (``WARNING:root:...``, triggered by a
  library calling ``logging.warning``) never happens. Idempotent.
- Known third-party messages are said in our words or dropped (:data:`REWORDS`): open_clip's "No pretrained
  weights loaded for model X. Model initialized randomly." becomes one line saying what it means for a run.
  A message already printed is not printed again.
- Standard library only: the trainer uses it too.

>>> reword("No pretrained weights loaded for model 'tiny'. Model initialized randomly.")
"CLIP model 'tiny' starts from random weights (--clip-pretrained none): fine for tests and demos; its scores and features mean nothing for real data"
"""

from __future__ import annotations

import logging
import re
import sys

__all__ = ["REWORDS", "cli_logging", "reword"]

REWORDS: list[tuple[re.Pattern[str], str | None]] = [
    (re.compile(r"No pretrained weights loaded for model '([^']*)'\. Model initialized randomly\."),
     "CLIP model '\\1' starts from random weights (--clip-pretrained none): fine for tests and demos; its scores "
     "and features mean nothing for real data"),
]


def reword(message: str) -> str | None:
    """``message`` in the project's words, ``None`` to drop it, or unchanged when it is not a known one."""
    for pattern, replacement in REWORDS:
        if pattern.search(message):
            return None if replacement is None else pattern.sub(replacement, message)
    return message


class _Handler(logging.Handler):
    """``sys.stderr`` as it is when a message comes (tests swap it), one ``warning: ...`` line per new
    message."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = reword(record.getMessage())
        except Exception:  # noqa: BLE001 - a bad log call must not break a run
            text = str(record.msg)
        if text is None or text in self.seen:
            return
        self.seen.add(text)
        level = "error" if record.levelno >= logging.ERROR else "warning"
        try:
            sys.stderr.write(f"{level}: {text}\n")
            sys.stderr.flush()
        except (OSError, ValueError):  # stderr closed (a pipe gone): nothing to tell
            pass


def cli_logging(level: int = logging.WARNING) -> None:
    """Route warnings and errors of every logger to stderr in our format (see the module docstring). Each
    call starts a new "already said" set (one command = one invocation of ``main``)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, _Handler):
            handler.seen.clear()
            return
    root.addHandler(_Handler())
    if root.level == logging.NOTSET or root.level > level:
        root.setLevel(level)
