"""scripts/bench/bench_batch.py --quick: one run in both modes, same manifest, the same model requests, batch at half
the cost (no timing assertions: CI machines are shared)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.bench import bench_batch


def test_bench_batch_quick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "batch.json"
    assert bench_batch.main(["--quick", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    sync, batch = res["sync"], res["batch"]
    assert res["same_manifest"] is True
    assert sync["server"]["sync_requests"] == sync["calls"] == batch["server"]["batch_lines"] == batch["calls"] > 0
    assert batch["server"]["sync_requests"] == 0 and batch["batches"] == batch["server"]["batches"] > 0
    assert sync["cost_usd"] > 0 and batch["cost_usd"] == pytest.approx(sync["cost_usd"] / 2, abs=1e-5)
    for role, entry in batch["by_role"].items():
        assert sync["by_role"][role]["cost_usd"] > 0  # priced: the simulator stands in for the paid API
        assert entry["cost_usd"] == pytest.approx(sync["by_role"][role]["cost_usd"] / 2, abs=1e-5)
    assert "| batch |" in capsys.readouterr().out
