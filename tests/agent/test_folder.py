"""agent/lifecycle/folder.py owns the run folder: its names, the one JSON reader, the summary and config writers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from agent.lifecycle import folder
from agent.lifecycle.folder import RunFolder, RunFolderError, read_json, read_jsonl
from agent.readout.report import ReportError

ROOT = Path(__file__).resolve().parents[2]
NAMES = (folder.CONFIG, folder.SUMMARY, folder.MANIFEST, folder.REJECTED, folder.REPORT, folder.CACHE, folder.TRACES,
         folder.CHECKPOINTS, folder.BATCH_LEDGER, folder.LOCK)


def test_no_other_module_spells_a_run_folder_file_name() -> None:
    literal = re.compile("|".join(rf"""["']{re.escape(name)}["']""" for name in NAMES))
    owner = ROOT / "agent" / "lifecycle" / "folder.py"
    found = [f"{path.relative_to(ROOT)}:{n}" for package in ("agent", "store") for path in (ROOT / package).rglob("*.py")
             if path != owner
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1) if literal.search(line)]
    assert found == []
    assert set(NAMES) <= set(re.findall(r'"([\w.]+)"', owner.read_text(encoding="utf-8")))


def test_summary_and_config_are_written_whole_by_their_owner(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    run.write_summary({"run_id": "r1", "name": "rødræv"})
    run.write_config({"run": {"out": str(tmp_path)}})
    text = run.summary.read_text(encoding="utf-8")
    assert text.endswith("}\n") and "rødræv" in text and json.loads(text) == {"run_id": "r1", "name": "rødræv"}
    assert read_json(run.config) == {"run": {"out": str(tmp_path)}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "summary.json"]  # no temp file left


def test_read_json_is_one_line_for_every_problem(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    assert read_json(run.summary) == {}  # missing and optional
    with pytest.raises(ReportError, match=r"summary.json: missing — is this a finished run"):
        read_json(run.summary, missing="missing — is this a finished run", error=ReportError)
    run.summary.write_text("{not json", encoding="utf-8")
    with pytest.raises(RunFolderError, match=r"summary.json: not readable JSON \(") as info:
        read_json(run.summary)
    assert "\n" not in str(info.value)
    run.summary.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(RunFolderError, match=r"summary.json: expected a JSON object, found list"):
        read_json(run.summary)


def test_read_jsonl_names_the_line(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    assert read_jsonl(run.rejected) == []
    run.write_rejected([{"a": 1}, {"b": "ü"}])
    assert read_jsonl(run.rejected) == [{"a": 1}, {"b": "ü"}]
    run.rejected.write_text('{"a": 1}\n\nnope\n', encoding="utf-8")
    with pytest.raises(RunFolderError, match=r"rejected.jsonl:3: not JSON"):
        read_jsonl(run.rejected)
