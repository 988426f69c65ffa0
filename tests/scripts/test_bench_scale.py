"""bench_scale and bench_report, tiny: they run end to end and what they measure behaves as claimed.

No timing assertions (the machine is shared): a warm rerun sends no request, every phase ran as its own
process (its own peak RSS), the report's pages exist and are bounded by the index page size.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.bench import bench_report, bench_scale


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_bench_scale_tiny(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "scale.json"
    assert bench_scale.main(["--sizes", "2x4", "--no-baseline", "--root", str(tmp_path / "w"),
                             "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["sizes"]
    assert row["classes"] == 2 and row["k"] == 4
    assert row["requests"] > 0 and row["calls"] >= row["requests"] and row["warm_requests"] == 0
    assert row["replay_requests"] == 0 and row["replay_ms_per_class"] > 0
    for phase in ("cold_proc", "warm_proc", "replay_proc", "resume_proc", "traces_summary_proc", "traces_export_proc"):
        assert row[phase]["code"] == 0 and row[phase]["wall_s"] > 0 and row[phase]["rss_mib"] > 0
    assert row["store_bytes"]["traces"] > 0 and row["store_bytes_per_call"]["checkpoints"] > 0
    assert row["replay_traces_bytes"] > row["store_bytes"]["traces"]  # the replay's cache hits are rows too
    assert row["summary_json_bytes"] > 0 and row["report_index_bytes"] > 0 and row["warm_ms_per_class"] > 0
    assert "calls" in row["traces_summary_proc"]["tail"]  # the inspector's summary really printed
    assert "N=2 K=4" in capsys.readouterr().out
    again = tmp_path / "again.json"  # the warm phases again on the same folder: a replay, then a reuse
    assert bench_scale.main(["--sizes", "2x4", "--root", str(tmp_path / "w"), "--again", "--json", str(again)]) == 0
    (row,) = json.loads(again.read_text())["sizes"]
    assert row["requests"] == 0 and row["warm_ms_per_class"] > 0 and row["replay_proc"]["code"] == 0


def test_bench_report_tiny(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    assert bench_report.main(["--classes", "103", "--k", "2", "--root", str(tmp_path / "w"), "--json", str(out),
                              "--no-chromium"]) == 0
    res = json.loads(out.read_text())
    assert res["images"] == 206 and res["thumbs"] == 206 and res["index_pages"] == 2
    assert res["largest_index_bytes"] >= res["index_bytes"] > 0 and res["class_page_bytes"] > 0
