"""--review end to end against the simulator: the pause, free resumes, decisions applied, nothing repaid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.readout.status import status_rows
from agent.review.decisions import DecisionStore
from agent.review.waiting import review_view
from agent.run import main
from agent.traces import main as traces_main
from scripts.sim.server import SimConfig, Simulator
from store.manifest import read_manifest
from tests.agent.run_helpers import agent_argv, make_dataset


def _accepted(out: Path, name: str) -> dict[int, str]:
    view = next(c for c in review_view(out) if c.name == name)
    assert view.payload is not None, f"{name} does not await review"
    return {i["index"]: i["sha256"] for i in view.payload["items"] if i["status"] == "accepted"}


def _sent(sim: Simulator) -> dict[str, int]:
    stats = sim.stats()
    sim.reset_stats()
    return dict(stats["by_kind"])


def test_review_pauses_resumes_free_and_applies_decisions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_dataset(tmp_path / "data")
    out = tmp_path / "run"
    with Simulator(SimConfig(seed=0)) as sim:
        def run(*extra: str) -> int:
            return main(agent_argv(data, out, sim.base_url, *extra, k=4))

        # 1. Every class pauses at the review interrupt; the run exits 4 and says how to review.
        assert run("--review", "--review-rounds", "1") == 4
        first = _sent(sim)
        assert first and "refine" not in first
        err = capsys.readouterr().err
        assert f"3 classes await review: python -m agent.review {out}" in err
        assert read_manifest(out / "manifest.jsonl") == []
        assert {r["status"] for r in status_rows(out)} == {"awaiting review"}
        assert traces_main([str(out), "status"]) == 0
        assert capsys.readouterr().out.count("awaiting review") == 3

        # 2. A resume with no decision sends nothing and keeps every class waiting.
        assert run("--resume") == 4
        assert _sent(sim) == {}

        # 3. red fox: reject two images (one with a note), edit C_y, approve. snow owl: approve as is.
        #    sea turtle: reject its image without approving (it is re-rendered, then asked again).
        fox = _accepted(out, "red fox")
        turtle = _accepted(out, "sea turtle")
        store = DecisionStore(out)
        store.reject("red fox", 0, 0, "a machine, not an animal")
        store.reject("red fox", 0, 1)
        store.set_class("red fox", 0, template="A photo of a red fox, a small wild dog with rust fur.", approved=True)
        store.set_class("snow owl", 0, approved=True)
        store.reject("sea turtle", 0, min(turtle))
        store.close()
        assert run("--resume") == 4  # sea turtle waits again
        # Only the paper's refine + re-render of the three rejected images: nothing before the interrupt repaid.
        assert _sent(sim) == {"refine": 3, "image": 3}

    rows = read_manifest(out / "manifest.jsonl")
    fox_rows = [r for r in rows if r.class_name == "red fox"]
    assert {fox[0], fox[1]}.isdisjoint(r.sha256 for r in fox_rows)  # the rejected images left the manifest
    assert len(fox_rows) == len(fox)  # ... and their re-renders took their place (μ = -1 accepts all)
    assert sum(r.round for r in fox_rows) >= 2
    assert len([r for r in rows if r.class_name == "snow owl"]) > 0
    assert not [r for r in rows if r.class_name == "sea turtle"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"]["red fox"]["template"].startswith("A photo of a red fox, a small wild dog")
    assert summary["classes"]["red fox"]["counters"]["review_rejected"] == 2
    assert summary["classes"]["sea turtle"]["status"] == "review"
    assert "reviewed: round 1 rejected (a machine, not an animal)" in (out / "report.html").read_text()

    # 4. sea turtle, round 2: its review rounds (1) are spent, so a rejection is final and costs nothing.
    again = _accepted(out, "sea turtle")
    assert turtle[min(turtle)] not in again.values()
    store = DecisionStore(out)
    store.reject("sea turtle", 1, min(again), "still wrong")
    store.set_class("sea turtle", 1, approved=True)
    store.close()
    with Simulator(SimConfig(seed=0)) as sim:
        assert main(agent_argv(data, out, sim.base_url, "--resume", k=4)) == 0
        assert _sent(sim) == {}
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    final = [r for r in rejected if r["class_name"] == "sea turtle"]
    assert final and final[0]["error"] == "rejected in review: still wrong"
    assert final[0]["reviewed"][-1] == {"round": 2, "decision": "rejected", "note": "still wrong"}
    assert {r["status"] for r in status_rows(out)} == {"complete"}


def test_review_with_softmax_scoring_passes_the_render_gate(tmp_path: Path) -> None:
    """A softmax run pauses every class at the render gate too; a review resume goes through both."""
    data = make_dataset(tmp_path / "data")
    out = tmp_path / "run"
    with Simulator(SimConfig(seed=0)) as sim:
        def run(*extra: str) -> int:
            args = agent_argv(data, out, sim.base_url, "--score", "softmax", *extra, k=4)
            args[args.index("--threshold") + 1] = "0"
            return main(args)

        assert run("--review") == 4
        sim.reset_stats()
        fox = _accepted(out, "red fox")
        store = DecisionStore(out)
        store.reject("red fox", 0, min(fox))
        store.set_class("red fox", 0, template="A photo of a red fox, edited.", approved=True)
        store.close()
        assert run("--resume") == 4
        assert _sent(sim) == {"refine": 1, "image": 1}
    assert {r["class_name"]: r["status"] for r in status_rows(out)} == {
        "red fox": "complete", "snow owl": "awaiting review", "sea turtle": "awaiting review"}
    assert fox[min(fox)] not in {r.sha256 for r in read_manifest(out / "manifest.jsonl")}
    with Simulator(SimConfig(seed=0)) as sim:  # giving review up: the waiting classes finalize as they are
        args = agent_argv(data, out, sim.base_url, "--resume", "--no-review", "--score", "softmax", k=4)
        args[args.index("--threshold") + 1] = "0"
        assert main(args) == 0
        assert sim.stats()["total"] == 0
    assert {r["status"] for r in status_rows(out)} == {"complete"}
