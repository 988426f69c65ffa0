"""``python -m agent.run --t2i-provider diffusers`` end to end on CPU: chat roles on the loopback simulator,
images from a tiny random diffusers pipeline saved to a folder (no network, no weights).

Checked: the same run in two folders gives the same images (sha256s); a rerun is all cache hits with no
forward pass; a run killed with SIGKILL mid-render resumes to the uninterrupted result; a missing extra
is one error line; a dry run prices the local images at 0.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agent.run import main
from scripts.sim.server import SimConfig, Simulator
from scripts.sim.tiny_diffusers import build
from store.manifest import read_manifest
from tests.agent.run_helpers import agent_argv, make_dataset, sigkill_when

REPO = Path(__file__).resolve().parents[2]
BATCH = 4


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("tiny-sd") / "pipe")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def argv(data: Path, out: Path, sim_url: str, model: Path, *extra: str, k: int = 6) -> list[str]:
    """Chat roles on the simulator; t2i on the local pipeline (the later t2i flags win)."""
    return agent_argv(data, out, sim_url, "--t2i-provider", "diffusers", "--t2i-model", str(model),
                      "--t2i-size", "32x32", "--t2i-steps", "2", "--t2i-guidance", "1.0",
                      "--t2i-batch-size", str(BATCH), "--quiet", *extra, k=k)


def image_hashes(out: Path) -> list[str]:
    return sorted(row.sha256 for row in read_manifest(out / "manifest.jsonl"))


def t2i_rows(out: Path) -> list[dict]:
    with sqlite3.connect(out / "traces.sqlite") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM traces WHERE role = 't2i' ORDER BY started_at")]


def test_same_run_twice_gives_the_same_images_and_a_rerun_renders_nothing(tmp_path: Path, tiny_sd: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    data = make_dataset(tmp_path / "data")
    with Simulator(SimConfig(latency_ms=0, seed=0)) as sim:
        assert main(argv(data, tmp_path / "a", sim.base_url, tiny_sd)) == 0
        first_log = capsys.readouterr().err
        assert main(argv(data, tmp_path / "b", sim.base_url, tiny_sd)) == 0
        capsys.readouterr()
        sim.reset_stats()
        # rerun in the first folder, every class through the graph again (--replay): all cache hits
        assert main(argv(data, tmp_path / "a", sim.base_url, tiny_sd, "--replay")) == 0
        rerun_log = capsys.readouterr().err
        assert sim.stats()["total"] == 0
        manifest = (tmp_path / "a" / "manifest.jsonl").read_bytes()
        # and once more without it: the unchanged finished classes are taken as they are, no call, no trace row
        assert main(argv(data, tmp_path / "a", sim.base_url, tiny_sd)) == 0
        reuse_log = capsys.readouterr().out  # the final line
        assert sim.stats()["total"] == 0 and "3 unchanged class(es) reused" in reuse_log
        assert (tmp_path / "a" / "manifest.jsonl").read_bytes() == manifest
    hashes = image_hashes(tmp_path / "a")
    assert len(hashes) == 5 + 4 + 3 and hashes == image_hashes(tmp_path / "b")  # N_y = K - M_y per class
    assert all((tmp_path / "a" / "blobs" / h[:2] / f"{h}.png").is_file() for h in hashes)
    assert "forward pass(es) on cpu" in first_log and "forward pass" not in rerun_log  # 0 pipeline calls
    rows = t2i_rows(tmp_path / "a")
    rendered, rerun = rows[:12], rows[12:]
    assert len(rerun) == 12 and all(r["cache_hit"] == 1 for r in rerun)
    assert all(r["cache_hit"] == 0 and r["cost_usd"] == 0.0 and r["status"] == "ok" for r in rendered)
    meta = [json.loads(r["meta"]) for r in rendered]
    assert all(m["device"] == "cpu" and m["padded_to"] == BATCH and m["gpu_s"] > 0 for m in meta)
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["totals"]["session"]["requests"] == 0 and summary["cost"]["total_usd"] == 0.0


def test_sigkill_mid_render_then_resume_gives_the_uninterrupted_images(tmp_path: Path, tiny_sd: Path) -> None:
    data = make_dataset(tmp_path / "data")
    # One class at a time, slow chat: the first class's images are cached while the others still talk.
    extra = ("--max-classes-in-flight", "1", "--max-rounds", "1")
    with Simulator(SimConfig(latency_ms=150, seed=0)) as sim:
        assert main(argv(data, tmp_path / "reference", sim.base_url, tiny_sd, *extra, k=8)) == 0
        out = tmp_path / "killed"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen([sys.executable, "-m", "agent.run", *argv(data, out, sim.base_url, tiny_sd, *extra, k=8)],
                                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        sigkill_when(proc, lambda: cached_images(out) >= BATCH, "a rendered batch")
        assert not (out / "manifest.jsonl").exists()
        assert main(argv(data, out, sim.base_url, tiny_sd, *extra, "--resume", k=8)) == 0
    assert (out / "manifest.jsonl").read_bytes() == (tmp_path / "reference" / "manifest.jsonl").read_bytes()
    resumed = t2i_rows(out)
    assert sum(r["cache_hit"] for r in resumed) >= BATCH  # what was rendered before the kill was reused
    rendered = sum(1 for r in resumed if not r["cache_hit"])
    reference = sum(1 for r in t2i_rows(tmp_path / "reference") if not r["cache_hit"])
    assert rendered <= reference + BATCH  # only a batch in flight at the kill may be rendered twice


def cached_images(out: Path) -> int:
    """t2i answers committed to the run's call cache (read-only; 0 before the file exists)."""
    if not (out / "cache.sqlite").exists():
        return 0
    try:
        with sqlite3.connect(f"file:{out / 'cache.sqlite'}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT count(*) FROM calls WHERE role = 't2i'").fetchone()[0])
    except sqlite3.OperationalError:  # the table is being created
        return 0


def test_a_missing_extra_is_one_error_line_and_nothing_is_written(tmp_path: Path, tiny_sd: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    data = make_dataset(tmp_path / "data")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("diffusers", "accelerate") else real(name, *a))
    assert main(argv(data, tmp_path / "out", "http://127.0.0.1:9/v1", tiny_sd)) == 2
    err = capsys.readouterr().err
    assert err == ("error: t2i: provider 'diffusers' needs the optional packages diffusers, accelerate; install "
                   "them with: pip install -e \".[local]\" (diffusers, transformers, accelerate)\n")
    assert not (tmp_path / "out").exists()


def test_a_model_that_does_not_load_is_one_error_line_and_nothing_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_dataset(tmp_path / "data")
    broken = tmp_path / "broken-pipe"
    broken.mkdir()
    (broken / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')  # no components
    with Simulator(SimConfig(latency_ms=0, seed=0)) as sim:
        assert main(argv(data, tmp_path / "out", sim.base_url, broken)) == 2
        assert sim.stats()["total"] == 0  # not one chat request was paid for
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning: ")]
    assert len(errors) == 1
    assert errors[0].startswith(f"error: t2i model '{broken}': cannot load a diffusers pipeline on cpu")
    assert not (tmp_path / "out").exists()


def test_dry_run_prices_local_images_at_zero(tmp_path: Path, tiny_sd: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    data = make_dataset(tmp_path / "data")
    # Chat roles on a (never contacted) cloud URL: priced; the local pipeline: not billed.
    args = argv(data, tmp_path / "out", "https://api.example.com/v1", tiny_sd, "--dry-run", "--log-json",
                "--lmm-model", "gpt-4o", "--llm-model", "gpt-4o-mini")
    assert main(args) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["models"]["t2i"] == str(tiny_sd) and plan["total"]["t2i_calls"][0] == 12
    assert plan["total"]["cost_usd"] is not None and plan["total"]["cost_usd"][0] > 0  # chat only
    assert plan["not_billed"] == ["t2i"]
    assert not (tmp_path / "out").exists()
