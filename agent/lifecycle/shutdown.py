"""Graceful stop on SIGINT / SIGTERM: finish what is in flight, send nothing new, leave a resumable run.

Contract:

- ``graceful_stop()`` is a context manager entered *inside* the running event loop (``agent.run`` wraps
  ``runner.execute`` with it). While active, the first SIGINT or SIGTERM only sets a flag
  (:func:`stop_requested`); the providers check it before every request attempt and raise
  ``ProviderError(kind="stopped")`` instead of sending. Requests already sent finish (and are cached);
  the class that needed the refused request stops like a budget stop: its node raises, LangGraph keeps
  the last checkpoint (``runner.DURABILITY = "sync"``), and ``--resume`` re-runs that node from the cache.
- The exit code after a graceful stop is ``128 + signal``: 130 for SIGINT, 143 for SIGTERM (the shell
  convention), see :func:`exit_code`.
- A second signal while stopping means "now": the signal's default action (``SIG_DFL``) is restored and
  the signal re-raised, so the process ends at once, killed by that signal. Not ``KeyboardInterrupt``:
  unwinding through asyncio leaves the SQLite and executor threads to be joined at exit, which can hang.
  A hard stop is as safe as SIGKILL (the cache and the checkpoints commit per write); it only repays the
  requests that were in flight and loses trace rows not yet flushed.
- The flag is process-wide because signals are. Entering the context clears it; leaving restores the
  previous handlers, clears it again and leaves the signal on the yielded :class:`StopState` for the
  caller. Outside the context nothing is installed and nothing is refused (library callers, tests).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["STOP_SIGNALS", "StopState", "exit_code", "graceful_stop", "request_stop", "stop_requested", "stop_signal"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_state: dict[str, int | None] = {"signum": None}


@dataclass
class StopState:
    """What the ``graceful_stop`` context saw: the stop signal's number, or None (read it after the block)."""

    signum: int | None = None


def stop_requested() -> bool:
    """True once a stop signal arrived (or :func:`request_stop` was called) in the active context."""
    return _state["signum"] is not None


def stop_signal() -> int | None:
    """The number of the signal that asked for the stop, or None."""
    return _state["signum"]


def request_stop(signum: int = signal.SIGTERM) -> None:
    """Ask for a graceful stop as if ``signum`` had arrived (the signal handler, and tests)."""
    if _state["signum"] is None:
        _state["signum"] = int(signum)


def exit_code(signum: int) -> int:
    """``exit_code(signal.SIGINT) -> 130``, ``exit_code(signal.SIGTERM) -> 143``."""
    return 128 + int(signum)


@contextmanager
def graceful_stop(loop: asyncio.AbstractEventLoop | None = None) -> Iterator[StopState]:
    """Install the stop handlers on ``loop`` (default: the running loop) for the ``with`` body."""
    loop = loop or asyncio.get_running_loop()
    _state["signum"] = None
    installed = []
    for sig in STOP_SIGNALS:
        try:
            loop.add_signal_handler(sig, _on_signal, sig, loop)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
            pass
    seen = StopState()
    try:
        yield seen
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        seen.signum, _state["signum"] = _state["signum"], None


def _on_signal(sig: int, loop: asyncio.AbstractEventLoop) -> None:
    if not stop_requested():
        request_stop(sig)
        return
    # Second signal: stop now, as the signal's default action would have (see the module docstring).
    loop.remove_signal_handler(sig)
    signal.signal(sig, signal.SIG_DFL)
    signal.raise_signal(sig)
