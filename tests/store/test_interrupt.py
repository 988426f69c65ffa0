"""The start-up guard: a signal is one stderr line and 128 + signal; every command installs it first thing."""

from __future__ import annotations

import ast
import signal
from pathlib import Path

import pytest

from store.interrupt import interrupt_line
from tests.store.interrupt_helpers import REPO, needs_proc, spawn, stop, wait_for_guard

# A command that never ends by itself; the guard is installed like an entry point does it.
_COMMAND = """
import sys, time
from store.interrupt import exit_on_interrupt
exit_on_interrupt("demo", "nothing happened")
mode = sys.argv[1]
if mode == "default-handler":  # e.g. asyncio removed its own handler: Python's default is back
    import signal
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: None)  # keeps SigCgt set, so the test sees the guard
if mode == "child":  # a forked child (a DataLoader worker) behaves as if no guard were there
    import os, signal
    pid = os.fork()
    if pid == 0:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(60)
        except KeyboardInterrupt:
            os._exit(7)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    print(f"child exit {os.waitstatus_to_exitcode(status)}", file=sys.stderr, flush=True)
time.sleep(60)
"""

# Command-line entry points: each installs the guard before its other imports.
ENTRY_POINTS = ("agent/run.py", "agent/traces.py", "agent/readout/inspector.py", "agent/report.py",
                "agent/readout/report.py", "agent/review/__main__.py", "trainer/train.py", "trainer/eval.py", "scripts/lt_tools.py",
                "scripts/lt/inspect_split.py", "scripts/lt/make_lt.py", "scripts/lt/select_tail.py",
                "scripts/lt/folder_to_list.py",
                "scripts/demo.py", "scripts/simulator.py", "scripts/sim/server.py", "scripts/sim/tiny_diffusers.py")


def test_interrupt_line() -> None:
    assert interrupt_line("agent.traces", signal.SIGINT, "nothing was changed") == \
        "agent.traces: interrupted (Ctrl-C); nothing was changed"
    assert interrupt_line("x", signal.SIGTERM) == "x: stopped (SIGTERM)"


@needs_proc
@pytest.mark.parametrize(("sig", "code", "line"), [
    (signal.SIGINT, 130, "demo: interrupted (Ctrl-C); nothing happened"),
    (signal.SIGTERM, 143, "demo: stopped (SIGTERM); nothing happened"),
])
def test_a_signal_is_one_line_and_128_plus_signal(sig: int, code: int, line: str) -> None:
    proc = spawn(["-c", _COMMAND, "plain"])
    wait_for_guard(proc)
    assert stop(proc, sig) == (code, [line])


@needs_proc
def test_an_escaping_keyboard_interrupt_is_one_line_without_the_note() -> None:
    proc = spawn(["-c", _COMMAND, "default-handler"])
    wait_for_guard(proc)
    assert stop(proc, signal.SIGINT) == (130, ["demo: interrupted (Ctrl-C)"])


@needs_proc
def test_a_forked_child_keeps_pythons_default() -> None:
    proc = spawn(["-c", _COMMAND, "child"])
    assert proc.stderr is not None
    assert proc.stderr.readline().decode().strip() == "child exit 7"  # KeyboardInterrupt, caught by the child
    assert stop(proc, signal.SIGINT) == (130, ["demo: interrupted (Ctrl-C); nothing happened"])


@pytest.mark.parametrize("path", ENTRY_POINTS)
def test_entry_points_install_the_guard_before_other_imports(path: str) -> None:
    """Statements before the guard: only the docstring, ``from __future__`` and the guard's own import."""
    tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.If) and "exit_on_interrupt" in ast.unparse(node.body[0]):
            assert ast.unparse(node.test) == "__name__ == '__main__'"
            return
        allowed = (
            (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
            or (isinstance(node, ast.ImportFrom) and node.module in ("__future__", "store.interrupt"))
        )
        assert allowed, f"{path}:{node.lineno}: runs before the start-up guard"
    raise AssertionError(f"{path}: no `if __name__ == '__main__': exit_on_interrupt(...)` at the top")


def test_every_main_module_is_listed() -> None:
    """A new ``python -m`` command joins ENTRY_POINTS (benchmarks excepted)."""
    found = {str(p.relative_to(REPO)) for folder in ("agent", "trainer", "scripts")
             for p in (REPO / folder).rglob("*.py") if 'if __name__ == "__main__"' in p.read_text(encoding="utf-8")}
    not_yet = {p for p in found if Path(p).name.startswith(("bench_", "gpu_bench"))}
    assert found - not_yet == set(ENTRY_POINTS)
