"""The README's first command, end to end: scripts.demo on tiny settings, then again from the cache."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from scripts.demo import main
from store.manifest import read_manifest


def _requests(out: str) -> int:
    m = re.search(r"\[demo\] agent exit code 0; simulator requests: (\d+)", out)
    assert m, out
    return int(m.group(1))


def test_demo_runs_the_pipeline_then_replays_it_from_the_cache(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--out", str(tmp_path / "demo"), "--latency-ms", "0", "--k", "6", "--epochs", "1"]
    assert main(argv) == 0
    first = _requests(capsys.readouterr().out)
    rows = read_manifest(tmp_path / "demo" / "run" / "manifest.jsonl")
    assert first > 0 and rows and all(r.source == "generated" for r in rows)
    tail = {line.split("\t")[1] for line in (tmp_path / "demo" / "data" / "tail.txt").read_text().splitlines()
            if line and not line.startswith("#")}
    assert {r.class_name for r in rows} <= tail
    metrics = json.loads((tmp_path / "demo" / "train" / "metrics.json").read_text())
    assert {"overall", "many", "medium", "few"} <= set(metrics)

    assert main(argv) == 0  # second run: every model call is a cache hit, training starts over
    assert _requests(capsys.readouterr().out) == 0
    assert read_manifest(tmp_path / "demo" / "run" / "manifest.jsonl") == rows
