"""Concurrent use: one agent.run per run folder (a lock a dead process cannot keep), and two runs
sharing one cache file stay correct."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agent.lifecycle.lock import LOCK_NAME, RunLock, RunLocked
from agent.run import main
from scripts.sim.server import SimConfig, Simulator
from store.cache import CallCache
from tests.agent.run_helpers import agent_argv, make_dataset
from tests.reliability.helpers import REPO, agent_env, rows_as_dicts, spawn, wait_for_requests

CLASSES = {"red fox": 1, "snow owl": 2, "sea turtle": 1, "pine marten": 2}


def test_lock_refuses_a_second_holder_and_frees_on_release(tmp_path):
    with RunLock(tmp_path / "run") as first:
        assert first.held
        with pytest.raises(RunLocked, match=rf"in use by another agent.run \(pid {os.getpid()} since"):
            RunLock(tmp_path / "run").acquire()
    with RunLock(tmp_path / "run"):  # released on exit: taken again at once
        pass
    assert (tmp_path / "run" / LOCK_NAME).exists()


def hold_lock(folder: Path) -> subprocess.Popen[bytes]:
    """A process that takes the run folder's lock and sleeps (what a running agent.run looks like to the lock)."""
    code = ("import sys, time; from pathlib import Path; from agent.lifecycle.lock import RunLock; "
            "RunLock(Path(sys.argv[1])).acquire(); print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], cwd=REPO, env=agent_env(),
                              stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
    return holder


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_a_killed_holder_does_not_keep_the_lock(tmp_path):
    holder = hold_lock(tmp_path / "run")
    try:
        with pytest.raises(RunLocked, match=f"pid {holder.pid}"):
            RunLock(tmp_path / "run").acquire()
    finally:
        kill(holder)
    with RunLock(tmp_path / "run"):  # the kernel dropped the dead process's lock
        pass


def test_second_run_on_a_folder_in_use_refuses_then_runs_once_the_holder_died(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", CLASSES)
    out = tmp_path / "run"
    holder = hold_lock(out)
    try:
        with Simulator(SimConfig(seed=0)) as sim:
            argv = agent_argv(data, out, sim.base_url, k=3)
            assert main(argv) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and f"in use by another agent.run (pid {holder.pid} since" in err[0], err
            assert [p.name for p in out.iterdir()] == [LOCK_NAME]  # the refused run wrote nothing
            assert sim.stats()["total"] == 0
            kill(holder)
            assert main(argv) in (0, 1)  # a dead holder's lock is gone (see test_crash_resume: SIGKILLed runs)
    finally:
        if holder.poll() is None:
            kill(holder)
    assert rows_as_dicts(out)


def test_two_runs_sharing_one_cache_file_stay_correct(tmp_path):
    data = make_dataset(tmp_path / "data", CLASSES)
    a, b, ref = tmp_path / "a", tmp_path / "b", tmp_path / "ref"
    a.mkdir()
    b.mkdir()
    _create_cache(a / "cache.sqlite")
    (b / "cache.sqlite").symlink_to(a / "cache.sqlite")  # the only way two run folders share a cache
    with Simulator(SimConfig(seed=0, latency_ms=20)) as sim:
        assert main(agent_argv(data, ref, sim.base_url, k=4)) in (0, 1)
        single = sim.stats()["total"]
        sim.reset_stats()
        other = spawn(agent_argv(data, b, sim.base_url, k=4))
        try:
            wait_for_requests(sim, other, 1, "the other run's first request")  # both really run at once
            code_a = main(agent_argv(data, a, sim.base_url, k=4))
            code_b = other.wait(timeout=240)
            err_b = other.stderr.read().decode() if other.stderr else ""
        finally:
            if other.poll() is None:
                other.kill()
        both = sim.stats()["total"]
    assert code_a in (0, 1) and code_b == code_a, err_b
    assert "locked" not in err_b.lower()
    assert rows_as_dicts(a) == rows_as_dicts(ref) == rows_as_dicts(b)
    # Each request is made at most once per run; whatever one run cached, the other did not pay again.
    assert single <= both <= 2 * single
    conn = sqlite3.connect(a / "cache.sqlite")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        # One entry per provider request (CLIP scores, cached beside them under their own role, aside).
        assert conn.execute("SELECT COUNT(*) FROM calls WHERE role != 'clip_score'").fetchone()[0] == single
    finally:
        conn.close()


def _create_cache(path: Path) -> None:
    import asyncio

    async def create() -> None:
        cache = await CallCache.open(path)
        await cache.close()

    asyncio.run(create())
