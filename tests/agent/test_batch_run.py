"""Batch mode end to end on the simulator (issue 15): the same run as a synchronous one at half the price,
the dry run's sync and batch cost side by side, the flags, --max-cost reserving at submission, progress of
waiting calls, and ``python -m agent.traces RUN batches [--cancel]``."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
from observe_helpers import finished_run
from openai import AsyncOpenAI

from agent.readout.inspector import main as traces_main
from agent.run import main as run_main
from scripts.sim.server import SimConfig, Simulator
from scripts.sim.tiny_run import make_inputs, run_args
from store.batches import BatchLedger
from store.traces import read_traces

FAST = ("--batch-window-s", "0.05", "--batch-poll-s", "0.02", "--batch-poll-max-s", "0.1")
ALL_BATCHED = ("--lmm-batch", "--llm-batch", "--t2i-batch", *FAST)
DELAYS = {"batch_validating_s": 0.02, "batch_in_progress_s": 0.1, "batch_finalizing_s": 0.02}


def total_cost(run: Path) -> float:
    return float(json.loads((run / "summary.json").read_text())["cost"]["total_usd"])


def test_a_batched_run_equals_the_sync_run_at_half_the_price(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sync_run, sync_stats = finished_run()
    inputs = make_inputs(tmp_path)
    out = tmp_path / "batch"
    with Simulator(SimConfig(seed=0, **DELAYS)) as sim:
        capsys.readouterr()
        assert run_main(run_args(inputs, out, sim.base_url, extra=(*ALL_BATCHED, "--log-json"))) == 0
        stats = sim.stats()
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    assert (out / "manifest.jsonl").read_bytes() == (sync_run / "manifest.jsonl").read_bytes()
    submitted = stats["batch"]["submitted"]
    assert stats["total"] == 0 and set(submitted.values()) == {1} and len(submitted) == sync_stats["total"]
    assert total_cost(out) == pytest.approx(total_cost(sync_run) / 2, abs=2e-6)  # summary rounds to 1e-6
    rows = [r for r in read_traces(out / "traces.sqlite") if not r.cache_hit]
    keys = {k for (k,) in sqlite3.connect(out / "cache.sqlite").execute("SELECT key FROM calls")}
    for row in rows:  # each call names its batch, its custom_id (= its cache key) and the batch's times
        assert row.meta["transport"] == "batch" and row.meta["custom_id"] in keys
        assert row.meta["batch_id"].startswith("batch_") and row.meta["batch_status"] == "completed"
        assert row.meta["batch_times"]["created_at"] <= row.meta["batch_times"]["completed_at"]
    assert {r.meta["custom_id"] for r in rows} == set(submitted)
    waiting = [e for e in events if e["event"] == "batches"]  # progress: calls waiting in batches, per role
    assert {e["role"] for e in waiting} == {"lmm", "llm", "t2i"} and max(e["waiting"] for e in waiting) > 0
    assert traces_main([str(out), "batches", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["batches"]
    assert {b["role"] for b in listed} == {"lmm", "llm", "t2i"} and sum(b["requests"] for b in listed) == len(rows)
    assert all(b["status"] == "completed" and b["state"] == "collected" and b["age_s"] >= 0 for b in listed)
    assert traces_main([str(out), "batches"]) == 0
    assert listed[0]["batch_id"] in capsys.readouterr().out


def test_dry_run_shows_sync_and_batch_cost_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = make_inputs(tmp_path)
    config = tmp_path / "ltgc.toml"
    config.write_text("[t2i]\nbatch = true\n[run]\nbatch_window_s = 0.5\n", encoding="utf-8")
    with Simulator(SimConfig(seed=0)) as sim:
        capsys.readouterr()
        args = run_args(inputs, tmp_path / "dry", sim.base_url, extra=("--config", str(config), "--dry-run"))
        assert run_main([*args, "--log-json"]) == 0
        plan = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert run_main(args) == 0
        table = capsys.readouterr().out
        assert sim.stats()["total"] == 0 and sim.stats()["batch"]["requests"] == {}
    total = plan["total"]
    assert plan["batched"] == ["t2i"]
    assert total["batch_cost_usd"] == pytest.approx([x / 2 for x in total["cost_usd"]])
    assert total["batch_cost_usd"][0] < total["run_cost_usd"][0] < total["cost_usd"][0]  # only images halved
    assert "sync USD" in table and "batch USD" in table and "with t2i batched" in table


def test_batch_flags_are_checked_and_kept_on_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = make_inputs(tmp_path)
    with Simulator(SimConfig(seed=0)) as sim:
        for bad, what in ((("--batch-max-requests", "60000"), "--batch-max-requests: must be an integer from 1 "
                                                              "to 50000"),
                          (("--batch-window-s", "0"), "--batch-window-s: must be a number of seconds > 0"),
                          (("--t2i-batch", "maybe"), "--t2i-batch: must be true or false")):
            capsys.readouterr()
            assert run_main(run_args(inputs, tmp_path / "bad", sim.base_url, extra=bad)) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith(f"error: {what}"), err
        assert not (tmp_path / "bad").exists() and sim.stats()["total"] == 0
    saved_run, _ = finished_run()
    saved = json.loads((saved_run / "config.json").read_text())
    assert saved["providers"]["t2i"]["batch"] is False and saved["run"]["batch_max_requests"] == 50_000


def test_max_cost_reserves_batched_requests_when_submitted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = make_inputs(tmp_path)
    out = tmp_path / "capped"
    prices = tmp_path / "prices.toml"  # text free, images $0.04 listed: $0.02 each through the Batch API
    prices.write_text('[models."gpt-4o"]\ninput_per_1m = 0\noutput_per_1m = 0\n'
                      '[models."gpt-4o-mini"]\ninput_per_1m = 0\noutput_per_1m = 0\n'
                      '[models."gpt-image-1"]\ndefault_size = "1024x1024"\ndefault_quality = "low"\n'
                      '[models."gpt-image-1".image.low]\n"1024x1024" = 0.04\n', encoding="utf-8")
    with Simulator(SimConfig(seed=0, **DELAYS)) as sim:
        code = run_main(run_args(inputs, out, sim.base_url, extra=(
            "--t2i-batch", *FAST, "--max-cost", "0.05", "--prices", str(prices), "--quiet")))
        stats = sim.stats()
    assert code == 3
    rows = read_traces(out / "traces.sqlite")
    images = [r for r in rows if r.role == "t2i" and r.status == "ok" and not r.cache_hit]
    refused = [r for r in rows if r.role == "t2i" and r.status == "refused"]
    assert len(images) == 2 and refused  # reserved at $0.02 each when submitted: a third would pass $0.05
    assert set(stats["batch"]["submitted"]) == {r.meta["custom_id"] for r in images}  # refused: never in a batch
    assert all(r.cost_usd == pytest.approx(0.02) for r in images) and total_cost(out) == pytest.approx(0.04)


def test_cancel_asks_the_server_to_cancel_the_runs_live_batches(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    with Simulator(SimConfig(seed=0, batch_in_progress_s=60, batch_finalizing_s=60)) as sim:
        providers = {role: {"base_url": sim.base_url, "model": "gpt-4o-mini"} for role in ("lmm", "llm", "t2i")}
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"run_id": "r1", "providers": providers}), encoding="utf-8")

        async def live_batch() -> str:
            ledger = await BatchLedger.open(run / "batches.sqlite")
            async with AsyncOpenAI(base_url=sim.base_url, api_key="k", max_retries=0) as client:
                line = json.dumps({"custom_id": "k1", "method": "POST", "url": "/v1/chat/completions",
                                   "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}})
                file = await client.files.create(file=("in.jsonl", line.encode() + b"\n"), purpose="batch")
                batch = await client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions",
                                                    completion_window="24h")
            await ledger.intent("s1", run_id="r1", role="llm", endpoint="/v1/chat/completions", custom_ids=["k1"])
            await ledger.submitted("s1", batch.id, {"status": "in_progress"})
            await ledger.close()
            return str(batch.id)

        batch_id = asyncio.run(live_batch())
        capsys.readouterr()
        assert traces_main([str(run), "batches", "--cancel"]) == 0
        out = capsys.readouterr().out
        assert f"cancel {batch_id} (llm): cancelling" in out
        assert sim.stats()["batch"]["by_status"] == {"cancelling": 1}
    assert traces_main([str(tmp_path), "batches"]) == 2
    assert "no batches.sqlite" in capsys.readouterr().err


def test_resume_may_switch_batch_mode_and_its_knobs() -> None:
    from agent.lifecycle.resume import check_resume

    saved = {"run": {"batch_window_s": 60.0, "batch_fallback": "none"}, "providers": {"t2i": {"batch": False}}}
    fresh = {"run": {"batch_window_s": 5.0, "batch_fallback": "sync"}, "providers": {"t2i": {"batch": True}}}
    assert check_resume(saved, fresh) == {"--batch-fallback": ["none", "sync"], "--batch-window-s": [60.0, 5.0],
                                          "--t2i-batch": [False, True]}


def test_a_local_pipeline_cannot_be_batched() -> None:
    from agent.providers.config import ConfigError, load_providers_config

    with pytest.raises(ConfigError, match=r"--t2i-batch: the Batch API is OpenAI's.*remove --t2i-batch"):
        load_providers_config(env={}, overrides={"t2i": {"provider": "diffusers", "model": "m", "batch": "true"}})
