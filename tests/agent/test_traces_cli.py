"""The trace inspector on real runs made with the simulator: content, filters, JSON shape, status."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from observe_helpers import finished_run

from agent.readout.inspector import main
from scripts.sim.server import SimConfig, Simulator
from scripts.sim.tiny_run import CLASSES, make_inputs, run_args
from store.traces import read_traces

ROOT = Path(__file__).resolve().parents[2]


def _traced(run: Path) -> bool:
    try:
        return bool(read_traces(run / "traces.sqlite"))
    except Exception:  # not created yet, or mid-creation
        return False


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    capsys.readouterr()  # drop what came before (the tiny run prints its progress lines)
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_summary_counts_every_call_and_prices_it(capsys: pytest.CaptureFixture[str]) -> None:
    run, stats = finished_run()
    data = _json(capsys, str(run), "summary", "--json")
    assert isinstance(data, dict)
    rows = {row["class_name"]: row for row in data["classes"]}
    assert set(rows) == set(CLASSES)
    summary = json.loads((run / "summary.json").read_text())["classes"]
    for name, row in rows.items():
        assert row["state"] == "complete"
        assert row["accepted"] == summary[name]["accepted"] and row["rejected"] == summary[name]["rejected"]
        assert row["cost_usd"] > 0  # real OpenAI model names: every call is priced
    for name, m_y in CLASSES.items():  # describe: one vision call per real image (+ at most one re-ask)
        assert m_y <= rows[name]["calls"]["lmm"]["calls"] <= 2 * m_y
    total = data["total"]
    # A first run: every traced call was one simulator request, and the counts say so (one definition).
    assert sum(c["calls"] for c in total["calls"].values()) == stats["total"]
    assert sum(c["requests"] for c in total["calls"].values()) == stats["total"]
    assert total["calls"]["t2i"]["sent"] == stats["requests"]["images"]
    assert all(c["refused"] == c["stopped"] == 0 for c in total["calls"].values())
    # Tokens: one definition (billed usage of sent calls, chat and image together) in both places.
    totals = json.loads((run / "summary.json").read_text())["totals"]["run"]
    assert (total["input_tokens"], total["output_tokens"]) == (totals["tokens"]["input"], totals["tokens"]["output"])
    assert totals["image_output_tokens"] > 0  # gpt-image-1's image tokens are counted, not dropped
    assert total["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in data["classes"]))


def test_summary_table_is_readable(capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = finished_run()
    capsys.readouterr()
    assert main([str(run), "summary"]) == 0
    out = capsys.readouterr().out
    for word in (*CLASSES, "total", "cost USD", "accepted"):
        assert word in out


def test_calls_filters(capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = finished_run()
    every = _json(capsys, str(run), "calls", "--json")
    assert isinstance(every, list) and every
    fox_describe = _json(capsys, str(run), "calls", "--json", "--class", "red fox", "--node", "describe")
    assert isinstance(fox_describe, list)
    assert len(fox_describe) >= CLASSES["red fox"]  # one per real image (+ re-asks)
    assert {(c["class_name"], c["node"], c["role"]) for c in fox_describe} == {("red fox", "describe", "lmm")}
    expected_round1 = [c["call_id"] for c in every if c["round"] == 1]
    round1 = _json(capsys, str(run), "calls", "--json", "--round", "1")
    assert [c["call_id"] for c in round1] == expected_round1  # type: ignore[union-attr]
    assert _json(capsys, str(run), "calls", "--json", "--cache-hit") == []
    assert len(_json(capsys, str(run), "calls", "--json", "--no-cache-hit")) == len(every)  # type: ignore[arg-type]
    assert _json(capsys, str(run), "calls", "--json", "--status", "error") == []
    keys = set(every[0])
    assert {"call_id", "class_name", "node", "round", "role", "model", "input_tokens", "output_tokens",
            "latency_s", "cache_hit", "attempts", "status", "error", "cost_usd", "prompt"} <= keys
    assert main([str(run), "calls", "--node", "summarize"]) == 0
    table = capsys.readouterr().out
    assert table.count("summarize") == len(CLASSES)


def test_show_prints_prompt_response_and_timing(capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = finished_run()
    describe = read_traces(run / "traces.sqlite", node="describe")[0]
    data = _json(capsys, str(run), "show", describe.call_id[:10], "--json")
    assert isinstance(data, dict)
    assert data["call_id"] == describe.call_id
    assert "briefly describe the image of the class" in data["prompt"]
    assert "[image sha256=" in data["prompt"]  # images appear as hashes, never bytes
    assert data["response_text"] == describe.response_text and data["attempts"] >= 1
    assert main([str(run), "show", describe.call_id]) == 0
    out = capsys.readouterr().out
    assert "prompt" in out and "response" in out and "latency_s" in out


def test_export_jsonl_one_line_per_call(capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = finished_run()
    assert main([str(run), "export", "--format", "jsonl", "--node", "extend"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines and all(line["node"] == "extend" for line in lines)
    assert len(lines) == len(read_traces(run / "traces.sqlite", node="extend"))


def test_bad_input_is_one_line_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run, _ = finished_run()
    assert main([str(run), "show", "ffffffffffff"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no call with id") and err.count("\n") == 1
    assert main([str(tmp_path / "nope"), "summary"]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_status_of_a_finished_run(capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = finished_run()
    data = _json(capsys, str(run), "status", "--json")
    assert isinstance(data, dict) and data["running"] is False
    assert [(r["class_name"], r["done"], r["next"], r["last"]) for r in data["classes"]] == \
        [(name, True, [], ["finalize"]) for name in CLASSES]


def test_status_of_a_run_killed_midway(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    inputs = make_inputs(tmp_path)
    out = tmp_path / "run"
    with Simulator(SimConfig(seed=0, latency_ms=300)) as sim:
        argv = run_args(inputs, out, sim.base_url, k=8)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-m", "agent.run", *argv], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            # Kill once some calls are on disk (traces are written in batches every 0.5 s) but, at
            # 300 ms a call, the classes are far from done.
            while not _traced(out) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert proc.poll() is None, "the run ended before it could be killed"
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    before = hashlib.sha256((out / "checkpoints.sqlite").read_bytes()).hexdigest()
    data = _json(capsys, str(out), "status", "--json")
    assert isinstance(data, dict) and data["running"] is False  # killed: the kernel dropped its lock
    rows = data["classes"]
    assert [r["class_name"] for r in rows] == list(CLASSES)
    unfinished = [r for r in rows if not r["done"]]
    assert unfinished, "a run killed mid-way has unfinished classes"
    for row in unfinished:
        assert row["status"] in ("interrupted", "not started")
        assert row["next"], "an unfinished class says what runs next"
    started = [r for r in unfinished if r["status"] == "interrupted"]
    assert started and all(r["last"] for r in started if r["step"])
    # While an agent.run holds the folder (its run.lock), the same classes read "running".
    from agent.lifecycle.lock import RunLock

    with RunLock(out):
        live = _json(capsys, str(out), "status", "--json")
    assert live["running"] is True and f"pid {os.getpid()}" in live["holder"]
    assert {r["status"] for r in live["classes"] if not r["done"]} <= {"running", "not started"}
    # Read-only: the inspector changed nothing in the checkpoint file.
    assert hashlib.sha256((out / "checkpoints.sqlite").read_bytes()).hexdigest() == before
    assert main([str(out), "summary", "--json"]) == 0  # no summary.json yet: still works from traces
    assert "running or interrupted" in capsys.readouterr().out
