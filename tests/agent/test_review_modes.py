"""--review with the Batch API transport and with the local diffusers pipeline: the pause, then one rejected
image refined and re-rendered through that transport, and nothing else sent."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.review.decisions import DecisionStore
from agent.review.waiting import review_view
from agent.run import main
from scripts.sim.server import SimConfig, Simulator
from scripts.sim.tiny_diffusers import build
from store.manifest import read_manifest
from tests.agent.run_helpers import agent_argv, make_dataset

BATCHED = ("--lmm-batch", "--llm-batch", "--t2i-batch", "--batch-window-s", "0.05", "--batch-poll-s", "0.02",
           "--batch-poll-max-s", "0.1")
DELAYS = {"batch_validating_s": 0.02, "batch_in_progress_s": 0.1, "batch_finalizing_s": 0.02}


def reject_one_approve_all(out: Path) -> str:
    """Reject red fox's first accepted image, approve every class; return the rejected image's sha256."""
    store = DecisionStore(out)
    rejected = ""
    for view in review_view(out):
        assert view.payload is not None, view
        if view.name == "red fox":
            item = next(i for i in view.payload["items"] if i["status"] == "accepted")
            store.reject(view.name, 0, item["index"], "not a fox")
            rejected = item["sha256"]
        store.set_class(view.name, 0, approved=True)
    store.close()
    return rejected


def t2i_sent(out: Path) -> int:
    with sqlite3.connect(out / "traces.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM traces WHERE role = 't2i' AND cache_hit = 0").fetchone()[0]


def test_review_with_the_batch_api(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data")
    out = tmp_path / "run"
    with Simulator(SimConfig(seed=0, **DELAYS)) as sim:
        assert main(agent_argv(data, out, sim.base_url, "--review", *BATCHED, k=4)) == 4
        before = dict(sim.stats()["batch"]["submitted"])
        rejected = reject_one_approve_all(out)
        assert main(agent_argv(data, out, sim.base_url, "--resume", k=4)) == 0
        stats = sim.stats()
    new = set(stats["batch"]["submitted"]) - set(before)
    assert stats["total"] == 0 and len(new) == 2  # one refine, one render: both through a batch
    assert rejected not in {r.sha256 for r in read_manifest(out / "manifest.jsonl")}


def test_review_with_the_local_diffusers_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = build(tmp_path / "pipe")
    data = make_dataset(tmp_path / "data")
    out = tmp_path / "run"
    local = ("--t2i-provider", "diffusers", "--t2i-model", str(model), "--t2i-size", "32x32", "--t2i-steps", "2",
             "--t2i-guidance", "1.0", "--quiet")
    with Simulator(SimConfig(seed=0)) as sim:
        assert main(agent_argv(data, out, sim.base_url, "--review", *local, k=4)) == 4
        rendered = t2i_sent(out)
        sim.reset_stats()
        rejected = reject_one_approve_all(out)
        assert main(agent_argv(data, out, sim.base_url, "--resume", *local, k=4)) == 0
        assert dict(sim.stats()["by_kind"]) == {"refine": 1}
    assert t2i_sent(out) == rendered + 1  # the one re-render, on the local pipeline
    rows = read_manifest(out / "manifest.jsonl")
    assert rejected not in {r.sha256 for r in rows} and len(rows) == rendered
