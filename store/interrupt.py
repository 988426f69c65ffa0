"""Ctrl-C or SIGTERM before a command's own signal handling is in place: one line on stderr, exit 130 / 143.

Every command-line entry point calls :func:`exit_on_interrupt` first thing when run as a program, before its
other imports (torch, open_clip, langgraph and openai take seconds to import)::

    from store.interrupt import exit_on_interrupt

    if __name__ == "__main__":
        exit_on_interrupt("agent.run", "still starting up, nothing was sent")

    import argparse  # ... the module's other imports

From then on, in that process:

- SIGINT / SIGTERM print ``agent.run: interrupted (Ctrl-C); <note>`` (``stopped (SIGTERM)``) to stderr and
  end the process at once with ``128 + signal`` (130 / 143), wherever the main thread is, in the middle of
  an import included. The exit is ``os._exit``: nothing is unwound and no ``finally`` runs, exactly like the
  signal's default action it replaces, so it is as safe as a kill (the store and the trainer write files
  atomically). A command with a graceful stop installs its own handlers once it can honour them
  (``agent.lifecycle.shutdown.graceful_stop``); they replace these, and the note only has to be true until then.
- A ``KeyboardInterrupt`` that escapes the program (Python's default handler is back, e.g. after asyncio
  removed its own) ends it with ``<prog>: interrupted (Ctrl-C)`` and 130 instead of a traceback. No note:
  the program may be past the phase the note describes.
- A process forked from this one (DataLoader workers) keeps Python's default behaviour, not this line.

The note must be true at any moment the handlers are in force. Standard library only: the trainer uses it.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType, TracebackType

__all__ = ["exit_on_interrupt", "interrupt_line"]

_WHAT = {signal.SIGINT: "interrupted (Ctrl-C)", signal.SIGTERM: "stopped (SIGTERM)"}


def exit_on_interrupt(prog: str, note: str) -> None:
    """Install the handlers described in the module docstring for this process (main thread only)."""
    owner = os.getpid()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:  # a forked child inherited the handler: behave as if it were not there
            _default_action(signum, frame)
            return
        _exit_now(interrupt_line(prog, signum, note), 128 + signum)

    for sig in _WHAT:
        signal.signal(sig, on_signal)
    previous_hook = sys.excepthook

    def on_uncaught(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt) and os.getpid() == owner:
            _exit_now(interrupt_line(prog, signal.SIGINT), 128 + signal.SIGINT)
        previous_hook(kind, value, tb)

    sys.excepthook = on_uncaught


def interrupt_line(prog: str, signum: int, note: str = "") -> str:
    """``interrupt_line("agent.traces", signal.SIGINT, "nothing was changed")``
    -> ``"agent.traces: interrupted (Ctrl-C); nothing was changed"``."""
    what = _WHAT.get(signal.Signals(signum), f"stopped by signal {int(signum)}")
    return f"{prog}: {what}; {note}" if note else f"{prog}: {what}"


def _exit_now(line: str, code: int) -> None:
    try:  # best effort: the main thread may have been stopped in the middle of a write to stdout
        sys.stdout.flush()
    except Exception:  # nothing is worth a traceback here
        pass
    os.write(2, (line + "\n").encode("utf-8", "replace"))  # unbuffered, safe inside a signal handler
    os._exit(code)


def _default_action(signum: int, frame: FrameType | None) -> None:
    if signum == signal.SIGINT:
        signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)
