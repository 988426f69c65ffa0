"""A fresh rerun into a finished folder reuses the unchanged complete classes (agent/lifecycle/reuse.py):
no call, no trace row, the same manifest bytes; anything a class depends on changing makes it replay."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import agent.lifecycle.reuse as reuse
from agent.run import main
from scripts.sim.server import SimConfig, Simulator
from tests.agent.run_helpers import CLASSES, agent_argv, make_dataset
from tests.reliability.helpers import REPO, agent_env


def _trace_rows(out: Path) -> int:
    with sqlite3.connect(out / "traces.sqlite") as db:
        return int(db.execute("SELECT COUNT(*) FROM traces").fetchone()[0])


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


def test_a_rerun_from_outside_reuses_every_unchanged_class(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data")
    out = tmp_path / "run"
    with Simulator(SimConfig(latency_ms=0, seed=0)) as sim:
        cmd = [sys.executable, "-m", "agent.run", *agent_argv(data, out, sim.base_url)]
        first = subprocess.run(cmd, cwd=REPO, env=agent_env(), capture_output=True, text=True, timeout=300)
        assert first.returncode == 0, first.stderr
        manifest, rows = (out / "manifest.jsonl").read_bytes(), _trace_rows(out)
        sent = sim.stats()["total"]
        again = subprocess.run(cmd, cwd=REPO, env=agent_env(), capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        assert sim.stats()["total"] == sent  # not one request
    assert f"{len(CLASSES)} unchanged class(es) reused" in again.stdout
    assert again.stderr.count("complete (unchanged: reused)") == len(CLASSES)
    assert (out / "manifest.jsonl").read_bytes() == manifest
    assert _trace_rows(out) == rows  # no call was made, so no row
    summary = _summary(out)
    assert summary["reused_classes"] == len(CLASSES)
    assert all(entry["reused"] and entry["status"] == "complete" for entry in summary["classes"].values())
    assert (out / "report.html").is_file()


def test_replay_a_changed_input_a_deleted_image_or_cache_runs_the_class_again(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str],
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_dataset(tmp_path / "data")
    out = tmp_path / "run"
    n = len(CLASSES)
    with Simulator(SimConfig(latency_ms=0, seed=0)) as sim:
        argv = agent_argv(data, out, sim.base_url)
        assert main(argv) == 0
        manifest = (out / "manifest.jsonl").read_bytes()
        calls = _trace_rows(out)
        capsys.readouterr()

        def rerun(*extra: str) -> tuple[int, str, int]:
            before_rows, before_sent = _trace_rows(out), sim.stats()["total"]
            assert main([*argv, *extra]) == 0
            line = capsys.readouterr().out
            assert (out / "manifest.jsonl").read_bytes() == manifest
            return _trace_rows(out) - before_rows, line, sim.stats()["total"] - before_sent

        # --replay: every class through the graph, every call a cache hit
        rows, line, sent = rerun("--replay")
        assert (rows, sent) == (calls, 0) and "reused" not in line
        rows, line, sent = rerun()
        assert (rows, sent) == (0, 0) and f"{n} unchanged class(es) reused" in line

        # one class's real image touched (new mtime): that class replays, the others are reused
        first = sorted((data / "images" / next(iter(CLASSES))).iterdir())[0]
        os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 10**9))
        rows, line, sent = rerun()
        assert 0 < rows < calls and sent == 0 and f"{n - 1} unchanged class(es) reused" in line

        # an accepted image deleted: its class replays and writes it again (from the blob, no request)
        victim = out / json.loads(manifest.splitlines()[-1])["path"]
        victim.unlink()
        rows, line, sent = rerun()
        assert rows > 0 and sent == 0 and victim.is_file() and f"{n - 1} unchanged class(es) reused" in line

        # the code changed (another digest): every class replays
        monkeypatch.setattr(reuse, "code_digest", lambda: "another version")
        rows, line, sent = rerun()
        assert (rows, sent) == (calls, 0) and "reused" not in line
        monkeypatch.undo()

        # the call cache deleted: a new epoch, so nothing is reused and every call is asked again
        for suffix in ("", "-wal", "-shm"):
            Path(f"{out / 'cache.sqlite'}{suffix}").unlink(missing_ok=True)
        assert main(argv) == 0
        assert sim.stats()["total"] > 0 and "reused" not in capsys.readouterr().out


def test_resume_never_takes_the_reuse_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_dataset(tmp_path / "data")
    out = tmp_path / "run"
    with Simulator(SimConfig(latency_ms=0, seed=0)) as sim:
        argv = agent_argv(data, out, sim.base_url)
        assert main(argv) == 0
        capsys.readouterr()
        assert main([*argv, "--resume"]) == 0  # complete classes are skipped by the resume path, not reused
        assert "reused" not in capsys.readouterr().out
        assert _summary(out)["reused_classes"] == 0
