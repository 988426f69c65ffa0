"""A traces.sqlite written before text was stored once (every request and reply inline, no ``encoding``
column, no ``segments`` table) reads exactly as the same run's packed file through every reader, and a
resume into it appends packed rows that read back next to the old ones."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from observe_helpers import finished_run

from agent.readout.inspector import main
from store.trace_schema import row_from_record
from store.traces import TraceRecord, TraceStore, read_counts, read_traces

ROOT = Path(__file__).resolve().parents[2]

# The traces table as ltgc wrote it before this change (queue_s, server_s and meta had been added; the text
# was inline). Spelled out, not derived from today's code, so the test keeps meaning what it says.
PREVIOUS_SCHEMA = """
CREATE TABLE traces ("call_id" TEXT PRIMARY KEY, "run_id" TEXT, "class_name" TEXT, "node" TEXT,
  "round" INTEGER, "role" TEXT, "gen_ai.operation.name" TEXT, "gen_ai.request.model" TEXT, "request" TEXT,
  "response_text" TEXT, "gen_ai.response.finish_reasons" TEXT, "gen_ai.usage.input_tokens" INTEGER,
  "gen_ai.usage.output_tokens" INTEGER, "images" INTEGER, "latency_s" REAL, "cache_hit" INTEGER,
  "attempts" INTEGER, "status" TEXT, "error" TEXT, "error.type" TEXT, "parse_dropped" INTEGER,
  "cost_usd" REAL, "started_at" REAL, "queue_s" REAL, "server_s" REAL, "meta" TEXT);
CREATE INDEX traces_run_id ON traces ("run_id", "started_at");
CREATE INDEX traces_class_name ON traces ("class_name", "started_at");
CREATE INDEX traces_node ON traces ("node", "started_at");
"""


def _old_folder(run: Path, dest: Path) -> list[TraceRecord]:
    """A copy of ``run`` whose traces.sqlite is rebuilt in the previous format; returns the records."""
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("traces.sqlite*"))
    records = read_traces(run / "traces.sqlite")
    with closing(sqlite3.connect(dest / "traces.sqlite")) as db:
        db.executescript(PREVIOUS_SCHEMA)
        rows = [row_from_record(r) for r in records]  # the inline row: request as JSON text
        for row in rows:
            row.pop("encoding")
        db.executemany(f"INSERT INTO traces VALUES ({', '.join('?' * len(rows[0]))})",
                       [tuple(row.values()) for row in rows])
        db.commit()
    return records


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[TraceRecord]]:
    run, _ = finished_run()
    root = tmp_path_factory.mktemp("old-format")
    new = root / "new"
    shutil.copytree(run, new)
    return new, root / "old", _old_folder(run, root / "old")


def _out(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_the_new_file_is_packed_and_the_old_one_is_not(folders: tuple[Path, Path, list[TraceRecord]]) -> None:
    new, old, _ = folders
    with closing(sqlite3.connect(new / "traces.sqlite")) as db:
        assert {e for (e,) in db.execute("SELECT DISTINCT encoding FROM traces")} == {1}
        assert db.execute("SELECT COUNT(*) FROM segments").fetchone()[0] > 0
    with closing(sqlite3.connect(old / "traces.sqlite")) as db:
        assert "encoding" not in {c[1] for c in db.execute("PRAGMA table_info(traces)")}
        assert db.execute("PRAGMA user_version").fetchone() == (0,)


def test_every_inspector_view_reads_the_same(folders: tuple[Path, Path, list[TraceRecord]],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    new, old, records = folders
    views = [["calls", "--json"], ["summary", "--json"], ["export", "--format", "jsonl"],
             ["export", "--format", "csv"], ["export", "--format", "jsonl", "--node", "extend"],
             *[["show", r.call_id, "--json"] for r in records[:: max(1, len(records) // 8)]]]
    for view in views:
        assert _out(capsys, str(old), *view).replace(str(old), "RUN") == \
            _out(capsys, str(new), *view).replace(str(new), "RUN"), view  # summary names its folder
    exported = [json.loads(line) for line in _out(capsys, str(old), "export", "--format", "jsonl").splitlines()]
    assert [(e["request"], e["response_text"]) for e in exported] == [(r.request, r.response_text) for r in records]
    assert read_traces(old / "traces.sqlite") == records
    assert read_counts(old / "traces.sqlite") == read_counts(new / "traces.sqlite")


def test_the_command_line_exports_the_same_from_outside(folders: tuple[Path, Path, list[TraceRecord]]) -> None:
    new, old, _ = folders
    outputs = [subprocess.run([sys.executable, "-m", "agent.traces", str(folder), "export", "--format", "jsonl"],
                              cwd=ROOT, capture_output=True, text=True, check=True).stdout for folder in (old, new)]
    assert outputs[0] == outputs[1] and outputs[0].count("\n") > 10


async def test_a_resume_into_the_old_folder_appends_packed_rows(folders: tuple[Path, Path, list[TraceRecord]],
                                                                tmp_path: Path) -> None:
    _, old, records = folders
    folder = tmp_path / "resumed"
    shutil.copytree(old, folder)
    path = folder / "traces.sqlite"
    run_id = records[0].run_id
    # What a resume writes: the same calls again (cache hits), with fresh ids and times.
    again = [dataclasses.replace(r, call_id=r.call_id[::-1], cache_hit=True, attempts=0, cost_usd=0.0,
                                 started_at=r.started_at + 1e6) for r in records]
    async with await TraceStore.open(path) as store:
        spent = await store.cost_by_class(run_id)
        counted = await store.counts(run_id)
        assert await store.query(run_id=run_id) == records  # the old rows through the async reader
        for record in again:
            store.add(record)
        assert await store.cost_by_class(run_id) == spent  # hits cost nothing: one SQL aggregate, unchanged
        assert sum(c["cache_hits"] for roles in (await store.counts(run_id)).values() for c in roles.values()) \
            == len(again) + sum(c["cache_hits"] for roles in counted.values() for c in roles.values())
    assert read_traces(path) == [*records, *again]
    with closing(sqlite3.connect(path)) as db:
        encoding = dict(db.execute("SELECT call_id, encoding FROM traces").fetchall())
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
    assert {encoding[r.call_id] for r in records} == {0} and {encoding[r.call_id] for r in again} == {1}
