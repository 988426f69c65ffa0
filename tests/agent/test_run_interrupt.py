"""Ctrl-C / SIGTERM while ``python -m agent.run`` is still starting up: one stderr line, exit 130 / 143.

The moments are observed, not slept for (``tests.store.interrupt_helpers``): right after the start-up guard is
in (the module's own imports: openai, pydantic), and once torch's library is mapped (torch, open_clip and
langgraph are loading). Either way nothing is written: the run folder appears only once the run can start.
Once a run is going the graceful stop answers instead (``tests/reliability``).
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from scripts.sim.server import SimConfig, Simulator
from store.interrupt import interrupt_line
from tests.agent.run_helpers import agent_argv, make_dataset
from tests.store.interrupt_helpers import loads_torch, needs_proc, spawn, stop, wait_for, wait_for_guard


@needs_proc
@pytest.mark.parametrize(("sig", "moment"), [
    (signal.SIGINT, "module imports"),
    (signal.SIGTERM, "module imports"),
    (signal.SIGINT, "heavy imports"),
])
def test_a_signal_during_start_up_is_one_line_and_nothing_is_sent(tmp_path: Path, sig: int, moment: str) -> None:
    data, out = make_dataset(tmp_path / "data"), tmp_path / "run"
    with Simulator(SimConfig(latency_ms=1, seed=0)) as sim:
        proc = spawn(["-m", "agent.run", *agent_argv(data, out, sim.base_url)])
        wait_for_guard(proc)
        assert not (out / "run.lock").exists(), "SIGTERM was caught only once the run had started"
        if moment == "heavy imports":
            wait_for(proc, lambda: loads_torch(proc.pid), "torch loading")
        code, lines = stop(proc, sig)
        sent = sim.stats()["total"]
    assert code == 128 + sig and not any("Traceback" in line for line in lines), (code, lines)
    expected = interrupt_line("agent.run", sig, "still starting up, nothing was sent")
    lines = [line for line in lines if not line.startswith("warning: ")]  # e.g. the random-CLIP note
    if expected in lines:
        assert lines == [expected] and sent == 0 and not out.exists()
    else:  # only a machine that finished the imports first gets here: the run's graceful stop answered
        assert any(f"stopped by signal {int(sig)}" in line for line in lines), lines
