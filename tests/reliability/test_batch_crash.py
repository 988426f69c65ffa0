"""Batch mode's crash safety (issue 15): SIGKILL at each step that talks to the Batch API, then --resume.

Six processes of one run are killed at six points (tests/reliability/batch_kill.py): before the upload,
between upload and create, after create but before its id is recorded, while polling, while the output is
saved, and while answers are written to the call cache. A last ``--resume`` finishes the run. The simulator
counts submissions per custom_id: every request of the run was submitted exactly once, no request was sent
synchronously, and the manifest is byte-for-byte a synchronous run's. A graceful Ctrl-C while waiting ends
the run at once and leaves its batches running server-side; ``--resume`` collects them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from agent.run import main
from scripts.sim.server import SimConfig, Simulator
from tests.agent.run_helpers import agent_argv, make_dataset
from tests.reliability.helpers import REPO, agent_env, same_outputs

CLASSES = {"red fox": 1, "snow owl": 2, "sea turtle": 1}
BATCH = ["--lmm-batch", "--llm-batch", "--t2i-batch", "--batch-window-s", "0.05", "--batch-poll-s", "0.02",
         "--batch-poll-max-s", "0.1"]
KILLS = [("before_upload", 1), ("after_upload", 1), ("after_create", 1), ("polling", 2), ("collecting", 1),
         ("handing_out", 2)]
DELAYS = {"batch_validating_s": 0.05, "batch_in_progress_s": 0.2, "batch_finalizing_s": 0.05}


def argv(data: Path, out: Path, base_url: str, *extra: str) -> list[str]:
    args = agent_argv(data, out, base_url, "--max-rounds", "1", "--quiet", *extra, k=4)
    args[args.index("--threshold") + 1] = "0.05"  # some images are refined: refine's calls are batched too
    return args


def reference(tmp_path: Path, data: Path, sim: Simulator) -> int:
    """The run synchronous and uninterrupted; the number of requests it made."""
    assert main(argv(data, tmp_path / "reference", sim.base_url)) in (0, 1)
    total = int(sim.stats()["total"])
    sim.reset_stats()
    return total


def test_sigkill_at_every_batch_step_then_resume(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", CLASSES)
    out, mark = tmp_path / "run", tmp_path / "killed-at.txt"
    table = []
    with Simulator(SimConfig(seed=0, **DELAYS)) as sim:
        full = reference(tmp_path, data, sim)
        for i, (point, nth) in enumerate(KILLS):
            # Batch mode is asked for once: --resume keeps it (config.json).
            extra = ["--resume"] if i else BATCH
            proc = subprocess.run([sys.executable, "-m", "tests.reliability.batch_kill", point, str(nth),
                                   *argv(data, out, sim.base_url, *extra)], cwd=REPO, timeout=300,
                                  env=agent_env(LTGC_KILL_MARK=str(mark)), capture_output=True)
            assert proc.returncode == -signal.SIGKILL, (point, proc.returncode, proc.stderr.decode()[-2000:])
            counts = sim.stats()["batch"]["submitted"]
            table.append((point, len(counts), max(counts.values(), default=0)))
        assert mark.read_text().split() == [p for p, _ in KILLS]  # each process died where it was meant to
        assert main(argv(data, out, sim.base_url, "--resume")) in (0, 1)
        stats = sim.stats()
    counts = stats["batch"]["submitted"]
    table.append(("final --resume", len(counts), max(counts.values())))
    print("\nkill point -> custom_ids submitted so far, most submissions of one custom_id")
    for row in table:
        print(f"  {row[0]:<16} {row[1]:>3} {row[2]:>2}")
    assert set(counts.values()) == {1}, {k: v for k, v in counts.items() if v != 1}
    assert len(counts) == full, (len(counts), full)  # every request of the run, each submitted once
    assert stats["total"] == 0  # nothing went synchronously
    same_outputs(out, tmp_path / "reference")


def test_ctrl_c_while_waiting_leaves_batches_running_and_resume_collects_them(tmp_path: Path, capsys) -> None:
    data = make_dataset(tmp_path / "data", CLASSES)
    out = tmp_path / "run"
    with Simulator(SimConfig(seed=0, **DELAYS)) as sim:
        full = reference(tmp_path, data, sim)
        sim.set_config(batch_in_progress_s=30)  # a batch that outlives the run's patience

        def interrupt_when_waiting() -> None:
            while sim.stats()["batch"]["by_status"].get("in_progress", 0) < 1:
                threading.Event().wait(0.01)
            os.kill(os.getpid(), signal.SIGINT)

        sender = threading.Thread(target=interrupt_when_waiting)
        sender.start()
        started = threading.Event()
        started.set()
        import time

        t0 = time.monotonic()
        try:
            assert main(argv(data, out, sim.base_url, *BATCH)) == 130
        finally:
            sender.join(timeout=60)
        assert time.monotonic() - t0 < 25  # it did not wait for the 30 s batch
        assert "--resume" in capsys.readouterr().err
        live = sim.stats()["batch"]["by_status"]
        assert live.get("in_progress", 0) >= 1, live  # left running server-side
        from agent.readout.inspector import main as traces

        assert traces([str(out), "batches", "--json"]) == 0
        listed = capsys.readouterr().out
        assert "in_progress" in listed
        sim.set_config(batch_in_progress_s=0.2)  # the server catches up
        assert main(argv(data, out, sim.base_url, "--resume")) in (0, 1)
        stats = sim.stats()
    assert set(stats["batch"]["submitted"].values()) == {1} and len(stats["batch"]["submitted"]) == full
    same_outputs(out, tmp_path / "reference")
