"""End to end on the simulator: a budget cap stops a run with exit 3; --resume with a higher cap finishes it;
--dry-run sends nothing and its call range brackets a real run's call count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from observe_helpers import finished_run

from agent.run import main as run_main
from scripts.sim.server import SimConfig, Simulator
from scripts.sim.tiny_run import CLASSES, make_inputs, run_args
from store.manifest import read_manifest
from store.traces import read_traces


def test_dry_run_sends_nothing_and_brackets_the_real_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, stats = finished_run()
    inputs = make_inputs(tmp_path)
    with Simulator(SimConfig(seed=0)) as sim:
        capsys.readouterr()
        code = run_main(run_args(inputs, tmp_path / "dry", sim.base_url, extra=("--dry-run", "--log-json")))
        assert sim.stats()["total"] == 0
    assert code == 0
    plan = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert plan["event"] == "plan" and [c["class_name"] for c in plan["classes"]] == list(CLASSES)
    low, high = plan["total"]["calls"]
    # The finished run used the same inputs and settings: its request count lies inside the printed range.
    assert low <= stats["total"] <= high
    for role, kind in (("t2i", "images"), ("lmm", None)):
        lo, hi = plan["total"][f"{role}_calls"]
        real = stats["requests"]["images"] if kind else stats["by_kind"]["describe"]
        assert lo <= real <= hi
    assert plan["total"]["cost_usd"][0] > 0
    assert not (tmp_path / "dry" / "cache.sqlite").exists()  # nothing was opened either
    # The table form names every class and says no model was called.
    with Simulator(SimConfig(seed=0)) as sim:
        capsys.readouterr()
        assert run_main(run_args(inputs, tmp_path / "dry", sim.base_url, extra=("--dry-run",))) == 0
        assert sim.stats()["total"] == 0
    table = capsys.readouterr().out
    assert "no model was called" in table and all(name in table for name in CLASSES)


def test_budget_cap_stops_with_exit_3_and_resume_completes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = make_inputs(tmp_path)
    out = tmp_path / "run"
    with Simulator(SimConfig(seed=0)) as sim:
        capsys.readouterr()
        code = run_main(run_args(inputs, out, sim.base_url, extra=("--max-calls", "6", "--quiet")))
        first = sim.stats()["total"]
        err = capsys.readouterr().err
        assert code == 3
        assert first == 6  # --max-calls is exact: refused calls never reach the server
        stop_lines = [line for line in err.splitlines() if line.startswith("budget reached")]
        assert len(stop_lines) == 1 and "--resume" in stop_lines[0] and "--max-calls" in stop_lines[0]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["cost"]["budget"]["stopped"] is True and summary["cost"]["budget"]["calls"] == 6
        assert any(c["status"] == "stopped" for c in summary["classes"].values())
        # Same cap on resume: the run has already spent it, so nothing new is sent.
        assert run_main(run_args(inputs, out, sim.base_url, extra=("--resume", "--max-calls", "6", "--quiet"))) == 3
        assert sim.stats()["total"] == first
        # A higher cap continues and completes.
        code = run_main(run_args(inputs, out, sim.base_url, extra=("--resume", "--max-calls", "500", "--quiet")))
        assert code == 0
        total = sim.stats()["total"]
    summary = json.loads((out / "summary.json").read_text())
    assert all(c["status"] == "complete" for c in summary["classes"].values())
    rows = [r for r in read_manifest(out / "manifest.jsonl") if r.source == "generated"]
    assert len(rows) == summary["totals"]["accepted"] and rows
    # Every request was billed once: the traces of the three invocations count exactly the sent requests.
    sent = [r for r in read_traces(out / "traces.sqlite") if not r.cache_hit and r.error_kind != "budget"]
    assert len(sent) == total
    assert summary["cost"]["total_usd"] == pytest.approx(sum(r.cost_usd or 0 for r in sent), abs=1e-6)
    assert (out / "report.html").is_file()


def test_calls_queued_at_a_rate_limit_are_refused_without_waiting(tmp_path: Path) -> None:
    # Issue 21: once the cap is reached, a render queued behind its role's per-minute limit is refused at
    # once, not when its rate-limit slot comes (at 1 image a minute, minutes per queued render before).
    import time

    inputs = make_inputs(tmp_path)
    with Simulator(SimConfig(seed=0)) as sim:
        assert run_main(run_args(inputs, tmp_path / "free", sim.base_url, rounds=0, extra=("--quiet",))) == 0
        chat = sim.stats()["requests"]["chat"]
    with Simulator(SimConfig(seed=0)) as sim:
        started = time.monotonic()
        # Every chat call and one render fit under the cap; the next render waits 60 s for its token.
        code = run_main(run_args(inputs, tmp_path / "run", sim.base_url, rounds=0, extra=(
            "--quiet", "--max-calls", str(chat + 1), "--t2i-per-minute", "1", "--t2i-max-in-flight", "1")))
        wall = time.monotonic() - started
        assert sim.stats()["requests"]["images"] == 1
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert code == 3 and summary["cost"]["budget"]["refused"] >= 2
    assert wall < 30, f"refused renders waited for rate-limit slots ({wall:.0f} s)"
