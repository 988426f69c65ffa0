"""Shared checks for the reliability tests: run-folder audits, trace reads, subprocess runs of agent.run.

The datasets and CLI flags come from ``tests.agent.run_helpers`` (one way to build a test run); what is
here is what only the reliability tests need: the invariants every run must keep whatever went wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from langgraph.checkpoint.serde.event_hooks import register_serde_event_listener
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver

from agent.lifecycle.checkpoints import strict_serializer
from store.manifest import ManifestRow, read_manifest
from store.trace_schema import row_from_record
from store.traces import read_traces

REPO = Path(__file__).resolve().parents[2]
ROLES = ("lmm", "llm", "t2i")


def classes(n: int) -> dict[str, int]:
    """``n`` tail classes with 1 or 2 real images each: ``{"class 00": 1, "class 01": 2, ...}``."""
    return {f"species {i:02d}": 1 + i % 2 for i in range(n)}


def role_flags(**fields: object) -> list[str]:
    """The same ``--<role>-<field> value`` for every role: ``role_flags(max_attempts=3)``."""
    out: list[str] = []
    for role in ROLES:
        for name, value in fields.items():
            out += [f"--{role}-{name.replace('_', '-')}", str(value)]
    return out


def summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


def traces(out: Path) -> list[dict[str, Any]]:
    """Every trace row of the run folder by column name, its text decoded (``request`` as JSON text, as an
    inline row holds it): read-only, through ``store.traces.read_traces``."""
    return [row_from_record(record) for record in read_traces(out / "traces.sqlite")]


def requests_sent(rows: list[dict[str, Any]]) -> int:
    """HTTP requests the traces account for: every attempt of every call that was not a cache hit."""
    return sum(int(r["attempts"] or 0) for r in rows if not r["cache_hit"])


def audit(out: Path, names: list[str], *, max_attempts: int) -> tuple[dict[str, Any], list[ManifestRow]]:
    """The invariants of a finished run, whatever faults it met; returns ``(summary, manifest rows)``.

    Every class is complete, short (items missing, counted per reason) or failed with a reason; the
    manifest parses, has no duplicate row, and every row names a file of the run folder whose bytes hash to
    the row's sha256, only for complete and short classes, as many as the summary's ``accepted``; no call
    made more attempts than allowed.
    """
    info = summary(out)
    assert sorted(info["classes"]) == sorted(names)
    for name, entry in info["classes"].items():
        assert entry["status"] in ("complete", "short", "failed"), (name, entry["status"])
        if entry["status"] == "failed":
            assert entry["error"], f"{name} failed without a reason"
        if entry["status"] == "short":
            assert entry["missing"] == sum(entry["missing_by_reason"].values()) > 0, (name, entry)
        if entry["status"] == "complete":
            assert entry["missing"] == 0, (name, entry)
    rows = read_manifest(out / "manifest.jsonl")
    assert len({r.path for r in rows}) == len(rows), "duplicate manifest paths"
    assert len({(r.class_name, r.sha256) for r in rows}) == len(rows), "duplicate images in a class"
    per_class = Counter(r.class_name for r in rows)
    for name, entry in info["classes"].items():
        expected = entry["accepted"] if entry["status"] in ("complete", "short") else 0
        assert per_class.get(name, 0) == expected, (name, per_class.get(name), entry)
    for row in rows:
        data = (out / row.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row.sha256, row.path
        assert (out / row.path).resolve().is_relative_to(out.resolve())
    for row in traces(out):
        assert 0 <= int(row["attempts"] or 0) <= max_attempts, row
    return info, rows


def rows_as_dicts(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


def agent_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **extra}
    env.pop("LANGGRAPH_STRICT_MSGPACK", None)
    return env


def spawn(argv: list[str], *, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``python -m agent.run ARGV`` in the background (stdout discarded, stderr kept for messages)."""
    return subprocess.Popen([sys.executable, "-m", "agent.run", *argv], cwd=REPO, env=env or agent_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def wait_for_requests(sim: Any, proc: subprocess.Popen[bytes], at_least: int, what: str,
                      timeout: float = 180.0) -> None:
    """Poll the simulator until it has seen ``at_least`` requests; fail if ``proc`` ends first."""
    deadline = time.monotonic() + timeout
    while sim.stats()["total"] < at_least:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"the run ended (code {proc.returncode}) before {what}: {err}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def load_checkpoints(path: Path, serde: JsonPlusSerializer) -> list[tuple[str, Any, Any]]:
    """``(checkpoint id, channel values, pending writes)`` of every checkpoint of every thread in ``path``."""
    conn = sqlite3.connect(path)
    try:
        saver = SqliteSaver(conn, serde=serde)
        return [(t.config["configurable"]["checkpoint_id"], t.checkpoint["channel_values"], t.pending_writes)
                for t in saver.list(None)]
    finally:
        conn.close()


def strict_load(path: Path) -> list[tuple[str, Any, Any]]:
    """Load every checkpoint in LangGraph's strict msgpack mode; assert nothing was blocked and that the
    values equal what the permissive (default) mode revives."""
    events: list[dict[str, Any]] = []
    unregister = register_serde_event_listener(lambda e: events.append(dict(e)))
    try:
        strict = load_checkpoints(path, strict_serializer())
    finally:
        unregister()
    assert strict, f"no checkpoint in {path}"
    assert not [e for e in events if "blocked" in e["kind"]], events
    assert strict == load_checkpoints(path, JsonPlusSerializer(allowed_msgpack_modules=True))
    return strict


def same_outputs(out: Path, ref: Path) -> None:
    """``out`` finished with the same manifest, rejected list and class statuses as the reference run."""
    for name in ("manifest.jsonl", "rejected.jsonl"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), f"{name} differs from the reference run"
    assert {k: v["status"] for k, v in summary(out)["classes"].items()} == {
        k: v["status"] for k, v in summary(ref)["classes"].items()}
