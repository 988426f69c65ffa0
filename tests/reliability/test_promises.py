"""The README's promises, tested the way a stranger would: `python -m agent.run` in a subprocess against the
loopback simulator, real OpenAI model names (so the packaged price table prices every call), and only
what the process writes and the server saw as evidence.

- ``--max-cost``: renders queued behind ``--t2i-max-in-flight 2`` cannot push the spend past the cap by
  more than the two in flight; exit 3; the stop line suggests a higher cap; ``--resume`` with it completes.
- ``--resume`` refuses a setting that changes what is generated (old -> new, what to do instead) and
  applies + records one that changes only how.
- Nothing is written before the run can start (a CLIP model that does not load); ``--resume`` on a folder
  that never got past start-up says what to do.
- A full disk mid-run: one line, exit 1, nothing lost, ``--resume`` finishes once space is back.
- Image requests state size and quality; the recorded cost comes from the reported usage.
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.readout.cost import load_prices
from scripts.sim.server import SimConfig, Simulator
from scripts.sim.tiny_run import make_inputs, run_args
from store.manifest import read_manifest
from tests.reliability.helpers import REPO, agent_env, summary, traces

IMAGE_PRICE = load_prices().image_cost("gpt-image-1", images=1, size="1024x1024", quality="low") or 0.0


def agent(*argv: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.run", *argv], cwd=REPO, env=agent_env(),
                          capture_output=True, text=True, timeout=timeout)


def spent(out: Path) -> float:
    return sum(r["cost_usd"] or 0.0 for r in traces(out))


def test_max_cost_holds_when_renders_queue_behind_the_limiter(tmp_path: Path) -> None:
    inputs = make_inputs(tmp_path)
    out = tmp_path / "run"
    cap = 0.06  # a handful of $0.011 images once the chat calls are paid
    # K = 12: 3 classes x 10-11 renders, all queued at once behind two image slots (40 ms each).
    argv = run_args(inputs, out, "URL", k=12, rounds=0, extra=("--t2i-max-in-flight", "2", "--quiet"))
    with Simulator(SimConfig(seed=0, latency_ms=40)) as sim:
        argv = [sim.base_url if a == "URL" else a for a in argv]
        first = agent(*argv, "--max-cost", str(cap))
        images_first = sim.stats()["requests"]["images"]
        assert first.returncode == 3, first.stderr
        money = spent(out)
        assert money <= cap + 2 * IMAGE_PRICE + 1e-9, f"spent ${money:.4f} with a ${cap} cap"
        assert images_first < 31, "every queued render was sent"
        doc = summary(out)
        assert doc["cost"]["budget"]["stopped"] is True and doc["cost"]["budget"]["refused"] > 0
        stop = [line for line in first.stderr.splitlines() if line.startswith("budget reached")]
        assert len(stop) == 1 and "--resume" in stop[0] and "--max-cost 0.12" in stop[0], first.stderr
        # Resuming with the same cap sends nothing; with the suggested higher cap the run completes.
        again = agent("--out", str(out), "--resume", "--max-cost", str(cap), "--quiet")
        assert again.returncode == 3 and sim.stats()["requests"]["images"] == images_first
        done = agent("--out", str(out), "--resume", "--max-cost", "5", "--quiet")
        assert done.returncode == 0, done.stderr
    doc = summary(out)
    assert all(c["status"] == "complete" for c in doc["classes"].values())
    assert spent(out) <= 5
    config = json.loads((out / "config.json").read_text())
    assert config["controls"]["max_cost_usd"] == 5  # config.json says what the last session used


def test_resume_refuses_what_changes_and_applies_how_changes(tmp_path: Path) -> None:
    inputs = make_inputs(tmp_path)
    out = tmp_path / "run"
    with Simulator(SimConfig(seed=0)) as sim:
        argv = run_args(inputs, out, sim.base_url, k=6, extra=("--quiet",))
        assert agent(*argv, "--max-calls", "5").returncode == 3
        sent = sim.stats()["total"]
        before = (out / "config.json").read_bytes()
        for change, old_new in ((("--target-per-class", "13"), "6 -> 13"),
                                (("--llm-model", "gpt-4.1-mini"), "'gpt-4o-mini' -> 'gpt-4.1-mini'"),
                                (("--threshold", "0.3"), "0.0 -> 0.3")):
            refused = agent("--out", str(out), "--resume", *change)
            lines = refused.stderr.strip().splitlines()
            assert refused.returncode == 2 and len(lines) == 1, refused.stderr
            assert lines[0].startswith(f"error: --resume: {change[0]} changed {old_new}"), lines[0]
            assert "new --out" in lines[0] and "Drop --resume" in lines[0]
        assert sim.stats()["total"] == sent and (out / "config.json").read_bytes() == before
        # How-settings: applied, and config.json records what the run actually used.
        done = agent("--out", str(out), "--resume", "--llm-max-in-flight", "3", "--max-classes-in-flight", "2")
        assert done.returncode == 0, done.stderr
        assert "resume: applying" in done.stderr and "--llm-max-in-flight 16 -> 3" in done.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["providers"]["llm"]["max_in_flight"] == 3 and config["run"]["max_classes_in_flight"] == 2
    assert config["run"]["target_per_class"] == 6
    assert config["resumes"][-1]["changed"]["--llm-max-in-flight"] == [16, 3]
    assert all(c["K_y"] == 6 for c in summary(out)["classes"].values())


def test_nothing_is_written_before_the_run_can_start(tmp_path: Path) -> None:
    inputs = make_inputs(tmp_path)
    out = tmp_path / "run"
    with Simulator(SimConfig(seed=0)) as sim:
        argv = run_args(inputs, out, sim.base_url)
        argv[argv.index("--clip-model") + 1] = "no-such-clip-model"
        bad = agent(*argv)
        assert bad.returncode == 2 and bad.stderr.startswith("error: --clip-model no-such-clip-model"), bad.stderr
        assert not out.exists() and sim.stats()["total"] == 0
        # A folder left by a run that never got past start-up (only its lock): --resume says what to do.
        out.mkdir()
        (out / "run.lock").write_text("pid 1\n")
        stuck = agent("--out", str(out), "--resume")
        assert stuck.returncode == 2 and "never got past start-up" in stuck.stderr
        assert "without --resume" in stuck.stderr and len(stuck.stderr.strip().splitlines()) == 1


def test_disk_full_mid_run_stops_with_one_line_and_resume_finishes(tmp_path: Path, monkeypatch, capsys) -> None:
    from agent.run import main
    from store.blobs import BlobStore

    inputs = make_inputs(tmp_path)
    ref, out = tmp_path / "reference", tmp_path / "run"
    real_put = BlobStore.put
    stored: list[int] = []

    def put_then_fill_the_disk(self: BlobStore, data: bytes, ext: str) -> str:
        if len(stored) >= 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        stored.append(1)
        return real_put(self, data, ext)

    with Simulator(SimConfig(seed=0)) as sim:
        assert main(run_args(inputs, ref, sim.base_url, extra=("--quiet",))) == 0
        monkeypatch.setattr(BlobStore, "put", put_then_fill_the_disk)
        capsys.readouterr()
        assert main(run_args(inputs, out, sim.base_url, extra=("--quiet",))) == 1
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(err) == 1 and "disk is full" in err[0] and "--resume" in err[0], err
        assert {c["status"] for c in summary(out)["classes"].values()} & {"stopped"}
        list(read_manifest(out / "manifest.jsonl"))  # what was written is whole, never half a file
        monkeypatch.setattr(BlobStore, "put", real_put)  # space is back
        assert main(run_args(inputs, out, sim.base_url, extra=("--quiet", "--resume"))) == 0
    assert (out / "manifest.jsonl").read_bytes().replace(b"/run/", b"/x/") == \
        (ref / "manifest.jsonl").read_bytes().replace(b"/reference/", b"/x/")


def test_image_requests_state_size_and_quality_and_cost_comes_from_usage(tmp_path: Path) -> None:
    inputs = make_inputs(tmp_path)
    out = tmp_path / "run"
    log = tmp_path / "requests.jsonl"
    with Simulator(SimConfig(seed=0, log_path=str(log))) as sim:
        assert agent(*run_args(inputs, out, sim.base_url, extra=("--quiet",))).returncode == 0
        plan = agent(*run_args(inputs, tmp_path / "plan", sim.base_url, extra=("--dry-run", "--log-json")))
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    images = [e for e in entries if e["endpoint"] == "images"]
    assert images and all(e["size"] == "1024x1024" and e["quality"] == "low" for e in images), images[:1]
    rows = [r for r in traces(out) if r["role"] == "t2i" and not r["cache_hit"]]
    for row in rows:  # 272 image tokens at $40 / 1M plus the prompt at $5 / 1M: the usage the answer reported
        usage_cost = row["gen_ai.usage.output_tokens"] * 40e-6 + row["gen_ai.usage.input_tokens"] * 5e-6
        assert row["gen_ai.usage.output_tokens"] == 272 and row["cost_usd"] == pytest.approx(usage_cost)
    low, high = json.loads(plan.stdout.strip().splitlines()[-1])["total"]["cost_usd"]
    assert low <= spent(out) <= high, (low, spent(out), high)


def test_a_local_endpoint_is_reported_as_not_billed(tmp_path: Path) -> None:
    """The simulator on loopback answering to gpt-4o / gpt-image-1 names is a local server: the dry run, the
    run's totals and the inspector say "not billed", never a made-up bill at OpenAI's rates."""
    inputs = make_inputs(tmp_path)
    out = tmp_path / "run"
    with Simulator(SimConfig(seed=0)) as sim:
        argv = [a for a in run_args(inputs, out, sim.base_url) if a != "priced"]
        argv = [a for i, a in enumerate(argv) if not (a.endswith("-billing"))]
        plan = agent(*argv, "--dry-run")
        assert plan.returncode == 0 and "local, not billed" in plan.stdout and "$" not in plan.stdout, plan.stdout
        assert "time at the role limits" in plan.stdout
        done = agent(*argv, "--quiet")
        assert done.returncode == 0, done.stderr
    cost = summary(out)["cost"]
    assert cost["total_usd"] == 0 and set(cost["not_billed"]) == {"lmm", "llm", "t2i"}
    assert all(r["cost_usd"] == 0 for r in traces(out))
    assert "WARNING:root" not in done.stderr and "random weights" in done.stderr  # said once, in our words
