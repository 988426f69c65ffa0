"""Crash and resume: five SIGKILLs at seeded random moments of one run, and graceful SIGTERM / SIGINT stops.

The reference is the same run uninterrupted (in-process, same simulator, same flags). After the kills and a
final ``--resume`` the manifest and the rejected list are byte-for-byte the reference's, and each kill cost at
most the requests that were in flight. A graceful stop finishes what is in flight (every request the
server saw is in the traces), exits 143 (SIGTERM) or 130 (SIGINT), and repays nothing at all.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

from agent.run import main
from scripts.sim.server import SimConfig, Simulator
from tests.agent.run_helpers import agent_argv, make_dataset
from tests.reliability.helpers import (
    requests_sent,
    role_flags,
    same_outputs,
    spawn,
    strict_load,
    summary,
    traces,
    wait_for_requests,
)

CLASSES = {"red fox": 1, "snow owl": 2, "sea turtle": 1, "pine marten": 2, "sand cat": 1}
IN_FLIGHT = 2  # per role
IN_FLIGHT_LIMIT = 3 * IN_FLIGHT  # requests that can be in flight at once, all roles together
KILLS = 5


def argv(data: Path, out: Path, base_url: str, *extra: str) -> list[str]:
    # Threshold 0.05 on the tiny random CLIP: some images are refined (R = 1), so refine is killed too.
    args = agent_argv(data, out, base_url, "--max-rounds", "1", *role_flags(max_in_flight=IN_FLIGHT), *extra, k=5)
    args[args.index("--threshold") + 1] = "0.05"
    return args


def reference(tmp_path: Path, data: Path, sim: Simulator) -> int:
    """Run once uninterrupted into ``tmp_path/reference``; the number of requests it made."""
    sim.reset_stats()
    assert main(argv(data, tmp_path / "reference", sim.base_url)) in (0, 1)
    total = int(sim.stats()["total"])
    sim.reset_stats()
    return total


def stop(proc: subprocess.Popen[bytes], sig: int) -> int:
    try:
        proc.send_signal(sig)
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_five_sigkills_at_random_moments_then_resume(tmp_path):
    data = make_dataset(tmp_path / "data", CLASSES)
    out = tmp_path / "run"
    rng = random.Random(2024)
    with Simulator(SimConfig(seed=0, latency_ms=40)) as sim:
        full = reference(tmp_path, data, sim)
        for kill in range(KILLS):
            # Seeded moment: after 1 .. full/6 more requests, so five kills land before the run can end.
            more = rng.randint(1, max(1, full // (KILLS + 1)))
            start = sim.stats()["total"]
            proc = spawn(argv(data, out, sim.base_url, *(["--resume"] if kill else [])))
            wait_for_requests(sim, proc, start + more, f"kill {kill + 1}")
            assert stop(proc, signal.SIGKILL) == -signal.SIGKILL
        assert not (out / "manifest.jsonl").exists(), "a killed run must not have written its outputs"
        assert main(argv(data, out, sim.base_url, "--resume")) in (0, 1)
        total = sim.stats()["total"]
    same_outputs(out, tmp_path / "reference")
    assert full <= total <= full + KILLS * IN_FLIGHT_LIMIT, (total, full)


def test_sigterm_then_sigint_stop_gracefully_and_resume(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", CLASSES)
    out = tmp_path / "run"
    with Simulator(SimConfig(seed=0, latency_ms=100)) as sim:
        full = reference(tmp_path, data, sim)
        # SIGTERM to a `python -m agent.run` process: its default action would end it on the spot.
        proc = spawn(argv(data, out, sim.base_url))
        wait_for_requests(sim, proc, full // 4, "SIGTERM")
        assert stop(proc, signal.SIGTERM) == 143
        err = proc.stderr.read().decode() if proc.stderr else ""
        assert "--resume" in err and "Traceback" not in err, err
        check_stopped(out, sim)
        first = sim.stats()["total"]
        check_counts(out, err, session=first, run=first)
        # SIGINT (Ctrl-C) to a resumed run, in this process: saves a process start, same handlers.
        start = sim.stats()["total"]
        sender = threading.Thread(target=signal_at, args=(sim, start + full // 4, signal.SIGINT))
        sender.start()
        try:
            assert main(argv(data, out, sim.base_url, "--resume")) == 130
        finally:
            sender.join(timeout=60)
        err = capsys.readouterr().err
        assert "--resume" in err
        check_stopped(out, sim)
        second = sim.stats()["total"]
        check_counts(out, err, session=second - first, run=second)
        assert main(argv(data, out, sim.base_url, "--resume")) in (0, 1)
        total = sim.stats()["total"]
        check_counts(out, capsys.readouterr().out, session=total - second, run=total)
    same_outputs(out, tmp_path / "reference")
    assert total == full, "a graceful stop must not repay any request"


def signal_at(sim: Simulator, requests: int, sig: int) -> None:
    """Send ``sig`` to this process once the simulator has seen ``requests`` requests (far from the end of
    the run, so the run's own handlers are installed and take it)."""
    deadline = time.monotonic() + 120
    while sim.stats()["total"] < requests and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(os.getpid(), sig)


def check_counts(out: Path, output: str, *, session: int, run: int) -> None:
    """One set of counts: the final line, summary.json and `agent.traces summary` report the requests the
    simulator saw, this session's and the whole run's, and calls never sent are not errors."""
    from agent.readout.inspector import main as traces_main

    totals = summary(out)["totals"]
    assert (totals["session"]["requests"], totals["run"]["requests"]) == (session, run), totals
    final = [line for line in output.splitlines() if line.startswith("run t1:")]
    assert len(final) == 1 and f"this session {session} request(s) sent" in final[0], final
    assert f"whole run {run} request(s)" in final[0]
    rows = traces(out)
    assert not [r for r in rows if r["status"] == "error" and r["attempts"] == 0], "an unsent call shown as an error"
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert traces_main([str(out), "summary", "--json"]) == 0
    calls = json.loads(buffer.getvalue())["total"]["calls"]
    assert sum(c["requests"] for c in calls.values()) == run


def check_stopped(out: Path, sim: Simulator) -> None:
    """What a graceful stop leaves: no abandoned request, resumable classes, strict-loadable checkpoints."""
    # In-flight calls finished: every request the server saw is on a trace row (none abandoned).
    assert requests_sent(traces(out)) == sim.stats()["total"]
    assert sim.stats()["in_flight"] == 0
    statuses = {v["status"] for v in summary(out)["classes"].values()}
    assert statuses - {"complete", "failed"}, "the stop came too late to interrupt any class"
    # Mid-run history (stopped nodes' pending writes included) loads in strict msgpack mode.
    assert len(strict_load(out / "checkpoints.sqlite")) > len(CLASSES)


async def test_first_signal_asks_for_a_stop_and_leaving_clears_it():
    import asyncio

    from agent.lifecycle import shutdown

    with shutdown.graceful_stop() as seen:
        assert not shutdown.stop_requested()
        os.kill(os.getpid(), signal.SIGTERM)  # handled by the loop: sets the flag, does not end the process
        for _ in range(100):
            if shutdown.stop_requested():
                break
            await asyncio.sleep(0.01)
        assert shutdown.stop_signal() == signal.SIGTERM
    assert seen.signum == signal.SIGTERM and shutdown.exit_code(seen.signum) == 143
    assert not shutdown.stop_requested()  # library callers after the block are not refused

