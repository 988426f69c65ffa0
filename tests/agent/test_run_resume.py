"""Crash safety: a ``python -m agent.run`` process killed with SIGKILL mid-run, then ``--resume``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from agent.run import main
from scripts.sim.server import SimConfig, Simulator
from tests.agent.run_helpers import agent_argv, make_dataset, sigkill_when

REPO = Path(__file__).resolve().parents[2]
IN_FLIGHT = 2  # per role
ROLES = 3


def argv(data: Path, out: Path, base_url: str, *extra: str) -> list[str]:
    flags = [f"--{role}-max-in-flight" for role in ("lmm", "llm", "t2i")]
    args = agent_argv(data, out, base_url, "--max-rounds", "1", *extra, k=8)
    args[args.index("--threshold") + 1] = "0.06"  # tiny random CLIP: some images refined, some not
    for flag in flags:
        args += [flag, str(IN_FLIGHT)]
    return args


def test_sigkill_then_resume_gives_the_uninterrupted_result(tmp_path):
    data = make_dataset(tmp_path / "data")
    with Simulator(SimConfig(latency_ms=120, seed=0)) as sim:
        assert main(argv(data, tmp_path / "reference", sim.base_url)) == 0
        reference = sim.stats()["total"]
        sim.reset_stats()

        out = tmp_path / "killed"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen([sys.executable, "-m", "agent.run", *argv(data, out, sim.base_url)],
                                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # kill it half-way through its requests
        sigkill_when(proc, lambda: sim.stats()["total"] >= reference // 2, "half-way")
        killed_at = sim.stats()["total"]
        assert 0 < killed_at < reference and not (out / "manifest.jsonl").exists()

        assert main(argv(data, out, sim.base_url, "--resume")) == 0
        total = sim.stats()["total"]

    same = (out / "manifest.jsonl").read_bytes() == (tmp_path / "reference" / "manifest.jsonl").read_bytes()
    assert same, "resumed run's manifest differs from the uninterrupted run's"
    # Only requests that were in flight at the kill may be sent twice.
    assert total <= reference + IN_FLIGHT * ROLES, (total, reference)
    assert (out / "rejected.jsonl").read_bytes() == (tmp_path / "reference" / "rejected.jsonl").read_bytes()


def test_a_new_run_with_other_inputs_into_a_used_folder_is_refused(tmp_path, capsys):
    # Issue 21: a rerun without --resume used to replace the folder's manifest silently (19 rows -> 9).
    from store.manifest import read_manifest

    data, out = make_dataset(tmp_path / "data"), tmp_path / "run"
    with Simulator(SimConfig(seed=0)) as sim:
        assert main(agent_argv(data, out, sim.base_url, k=4)) == 0
        before = (out / "manifest.jsonl").read_bytes()
        capsys.readouterr()
        assert main(agent_argv(data, out, sim.base_url, k=3)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--target-per-class changed 4 -> 3" in err[0]
        assert "--resume" in err[0] and "--overwrite" in err[0] and "new --out" in err[0]
        assert (out / "manifest.jsonl").read_bytes() == before and sim.stats()["total"] > 0
        # The same inputs rerun as before (cache hits); --overwrite replaces the run on purpose.
        assert main(agent_argv(data, out, sim.base_url, k=4)) == 0
        assert (out / "manifest.jsonl").read_bytes() == before
        assert main(agent_argv(data, out, sim.base_url, "--overwrite", k=3)) == 0
        assert len(read_manifest(out / "manifest.jsonl")) == 2 + 1 + 0  # N_y = K - M_y with M_y = 1, 2, 3
