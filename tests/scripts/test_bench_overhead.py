"""scripts/bench/bench_overhead.py end to end on a handful of calls (real simulator child process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.bench.bench_overhead import main


def test_bench_runs_and_reports_every_series(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert main(["--n", "5", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["n"] == 5
    for series in ("raw_sdk", "providers_miss", "overhead_miss", "providers_hit"):
        assert set(data[series]) == {"p50", "p95", "mean"}
    assert data["raw_sdk"]["p50"] > 0 and data["providers_hit"]["p50"] > 0
    # A warm cache hit never reaches the network, so it is cheaper than any real round trip.
    assert data["providers_hit"]["p50"] < data["providers_miss"]["p50"]
    assert set(data["parts"]) == {"cache_key", "cache_get_miss", "cache_put", "limiter_acquire", "trace_add"}
    assert "overhead per call" in capsys.readouterr().out


def test_bench_rejects_a_too_small_n(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--n", "1"])
    assert info.value.code == 2
    assert "--n must be at least 2" in capsys.readouterr().err
