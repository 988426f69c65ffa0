"""Shared set-up for the end-to-end run tests: a tiny ImageFolder dataset, a tiny CLIP config, CLI flags."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from scripts.sim.tiny_run import E2E_CLASSES as CLASSES  # class -> M_y real images
from scripts.sim.tiny_run import TINY_CLIP, agent_argv, make_dataset

__all__ = ["CLASSES", "TINY_CLIP", "agent_argv", "make_dataset", "sigkill_when"]


def sigkill_when(proc: subprocess.Popen[bytes], ready: Callable[[], bool], what: str, timeout: float = 240) -> None:
    """SIGKILL ``proc`` as soon as ``ready()``; fail if it ends first or ``timeout`` passes."""
    import signal
    import time

    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, f"the run never got to {what}"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
