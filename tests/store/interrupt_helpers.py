"""Send a signal to a command while it is still starting up, and collect what it said.

"Starting up" is observed, not guessed with a sleep: ``store.interrupt.exit_on_interrupt`` is the only code
in these processes that catches SIGTERM, so once ``/proc/<pid>/status`` lists SIGTERM among the caught
signals the guard is in force and the command is still importing what follows it (seconds on any machine).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

needs_proc = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")


def spawn(args: list[str], **env: str) -> subprocess.Popen[bytes]:
    """``python ARGS`` from the repository root, offline; stdout discarded, stderr kept."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **env}
    return subprocess.Popen([sys.executable, *args], cwd=REPO, env=full_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def catches(pid: int, sig: int) -> bool:
    """True when process ``pid`` has a handler installed for ``sig`` (Linux: the ``SigCgt`` mask)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next((line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), "0")
    return bool(int(mask, 16) >> (sig - 1) & 1)


def wait_for(proc: subprocess.Popen[bytes], ready: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    """Poll ``ready()`` every 5 ms; fail if the process ends first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"the process ended (code {proc.returncode}) before {what}: {err}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def loads_torch(pid: int) -> bool:
    """True once process ``pid`` has mapped torch's C++ library (the heavy imports are under way)."""
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def wait_for_guard(proc: subprocess.Popen[bytes]) -> None:
    wait_for(proc, lambda: catches(proc.pid, signal.SIGTERM), "the start-up guard")


def stop(proc: subprocess.Popen[bytes], sig: int, timeout: float = 120.0) -> tuple[int, list[str]]:
    """Send ``sig``; return the exit code and the non-empty stderr lines."""
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, [line for line in err.decode(errors="replace").splitlines() if line.strip()]
