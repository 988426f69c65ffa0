"""The Batch API ledger: what this run folder has handed to the Batch API, written before each step.

Contract (``batches.sqlite`` in the run folder; one aiosqlite connection; agent/batch/transport.py is the writer):

- A *submission* is one batch file's worth of requests. Its ``state`` moves forward only, and each move
  is committed **before** the step that talks to the server, so a process killed at any moment leaves a
  record that says what may exist server-side::

      intent  --upload-->  uploaded  --batches.create-->  submitted  --output saved-->  collected
         \\________________________\\__ never became a batch (checked with batches.list) __> void

  ``intent`` rows list their requests (``members``: one row per ``custom_id``) in the same transaction
  as the submission, so nothing can be in a batch without being in the ledger. ``intent`` / ``uploaded``
  are *unresolved*: the batch may or may not exist (the kill may have come after ``batches.create`` was
  sent); the transport settles them by the submission id it put in the batch's metadata.
- ``collected`` records where each line of the batch's output and error files lies in the local copy
  (``results``: ``custom_id``, ``ok``, byte offset and length), committed after that copy is on disk
  and before any result is handed out, so a completed result is never lost.
- ``read_submissions(path)`` is the read-only view for ``python -m agent.traces RUN batches``.

Durability: WAL with ``synchronous=FULL`` — a handful of commits per batch, each of which decides
whether a paid request could be sent twice, are worth an fsync.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

from store.sqlite import open_wal

__all__ = ["STATES", "UNRESOLVED", "BatchLedger", "ResultRef", "Submission", "read_submissions"]

STATES = ("intent", "uploaded", "submitted", "collected", "void")
UNRESOLVED = ("intent", "uploaded")
LIVE = ("submitted",)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS submissions (
    submission_id TEXT PRIMARY KEY,
    run_id        TEXT NOT NULL,
    role          TEXT NOT NULL,
    endpoint      TEXT NOT NULL,
    state         TEXT NOT NULL,
    requests      INTEGER NOT NULL,
    file_id       TEXT,
    batch_id      TEXT,
    status        TEXT,
    counts        TEXT NOT NULL DEFAULT '{}',
    times         TEXT NOT NULL DEFAULT '{}',
    results_path  TEXT,
    note          TEXT,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
    submission_id TEXT NOT NULL,
    custom_id     TEXT NOT NULL,
    PRIMARY KEY (submission_id, custom_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS members_by_custom_id ON members (custom_id);
CREATE TABLE IF NOT EXISTS results (
    submission_id TEXT NOT NULL,
    custom_id     TEXT NOT NULL,
    ok            INTEGER NOT NULL,
    offset        INTEGER NOT NULL,
    length        INTEGER NOT NULL,
    PRIMARY KEY (submission_id, custom_id)
) WITHOUT ROWID;
"""
_COLUMNS = ("submission_id", "run_id", "role", "endpoint", "state", "requests", "file_id", "batch_id", "status",
            "counts", "times", "results_path", "note", "created_at", "updated_at")
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM submissions"


@dataclass
class Submission:
    """One row of ``submissions`` (``counts`` / ``times``: the server's ``request_counts`` and its
    ``*_at`` stamps as last seen)."""

    submission_id: str
    run_id: str
    role: str
    endpoint: str
    state: str
    requests: int
    created_at: float
    updated_at: float
    file_id: str | None = None
    batch_id: str | None = None
    status: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    times: dict[str, int | None] = field(default_factory=dict)
    results_path: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class ResultRef:
    """Where one request's output (or error) line lies in the local copy of its batch's files."""

    ok: bool
    offset: int
    length: int


class BatchLedger:
    """Writer of ``batches.sqlite``; build with :meth:`open` inside the running loop."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._lock = asyncio.Lock()  # one multi-statement transaction at a time on the shared connection

    @classmethod
    async def open(cls, path: Path | str) -> BatchLedger:
        path = Path(path)
        conn = await open_wal(path, _SCHEMA)
        await conn.execute("PRAGMA synchronous=FULL")
        return cls(conn, path)

    async def close(self) -> None:
        await self._conn.close()

    # --------------------------------------------------------------------------------- state moves
    async def intent(self, submission_id: str, *, run_id: str, role: str, endpoint: str,
                     custom_ids: Sequence[str]) -> None:
        """A submission about to be uploaded, with its requests (one transaction)."""
        now = time.time()
        async with self._transaction():
            await self._conn.execute(
                "INSERT INTO submissions (submission_id, run_id, role, endpoint, state, requests, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, 'intent', ?, ?, ?)",
                (submission_id, run_id, role, endpoint, len(custom_ids), now, now))
            await self._conn.executemany("INSERT INTO members (submission_id, custom_id) VALUES (?, ?)",
                                         [(submission_id, key) for key in custom_ids])

    async def uploaded(self, submission_id: str, file_id: str) -> None:
        await self._update(submission_id, state="uploaded", file_id=file_id)

    async def submitted(self, submission_id: str, batch_id: str, snapshot: dict[str, Any]) -> None:
        """The batch exists server-side (created now, or found by its submission id after a crash)."""
        await self._update(submission_id, state="submitted", batch_id=batch_id, **_snapshot(snapshot))

    async def seen(self, submission_id: str, snapshot: dict[str, Any]) -> None:
        """A poll's status, counts and times."""
        await self._update(submission_id, **_snapshot(snapshot))

    async def collected(self, submission_id: str, snapshot: dict[str, Any], results_path: str,
                        index: Iterable[tuple[str, bool, int, int]]) -> None:
        """The batch ended and its output / error lines are on disk at ``results_path`` (one transaction)."""
        async with self._transaction():
            await self._conn.execute("DELETE FROM results WHERE submission_id = ?", (submission_id,))
            await self._conn.executemany(
                "INSERT OR REPLACE INTO results (submission_id, custom_id, ok, offset, length) VALUES (?, ?, ?, ?, ?)",
                [(submission_id, key, int(ok), offset, length) for key, ok, offset, length in index])
            await self._set(submission_id, state="collected", results_path=results_path, **_snapshot(snapshot))

    async def void(self, submission_id: str, note: str) -> None:
        """The submission never became a batch: its requests are free to be submitted again."""
        await self._update(submission_id, state="void", note=note[:500])

    # ------------------------------------------------------------------------------------- queries
    async def submissions(self, *, role: str | None = None, states: Sequence[str] | None = None) -> list[Submission]:
        sql, params = _where(role, states)
        rows = await self._conn.execute_fetchall(f"{_SELECT}{sql} ORDER BY created_at", params)
        return [_row(tuple(r)) for r in rows]

    async def get(self, submission_id: str) -> Submission | None:
        rows = list(await self._conn.execute_fetchall(f"{_SELECT} WHERE submission_id = ?", (submission_id,)))
        return _row(tuple(rows[0])) if rows else None

    async def members(self, *, role: str) -> list[tuple[str, str]]:
        """``(custom_id, submission_id)`` of every request of ``role``, oldest submission first."""
        rows = await self._conn.execute_fetchall(
            "SELECT m.custom_id, m.submission_id FROM members AS m JOIN submissions AS s USING (submission_id) "
            "WHERE s.role = ? ORDER BY s.created_at", (role,))
        return [(str(a), str(b)) for a, b in rows]

    async def custom_ids(self, submission_id: str) -> list[str]:
        rows = await self._conn.execute_fetchall("SELECT custom_id FROM members WHERE submission_id = ?",
                                                 (submission_id,))
        return [str(r[0]) for r in rows]

    async def result(self, submission_id: str, custom_id: str) -> ResultRef | None:
        rows = list(await self._conn.execute_fetchall(
            "SELECT ok, offset, length FROM results WHERE submission_id = ? AND custom_id = ?",
            (submission_id, custom_id)))
        return ResultRef(bool(rows[0][0]), int(rows[0][1]), int(rows[0][2])) if rows else None

    # ------------------------------------------------------------------------------------- helpers
    async def _update(self, submission_id: str, **values: Any) -> None:
        async with self._transaction():
            await self._set(submission_id, **values)

    async def _set(self, submission_id: str, **values: Any) -> None:
        values["updated_at"] = time.time()
        assignments = ", ".join(f"{name} = ?" for name in values)
        cur = await self._conn.execute(f"UPDATE submissions SET {assignments} WHERE submission_id = ?",
                                       (*values.values(), submission_id))
        if cur.rowcount != 1:
            raise KeyError(f"batches ledger {self.path}: no submission {submission_id}")

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn, self._lock)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` under the ledger's lock; ``ROLLBACK`` on any error."""

    def __init__(self, conn: aiosqlite.Connection, lock: asyncio.Lock) -> None:
        self._conn, self._lock = conn, lock

    async def __aenter__(self) -> None:
        await self._lock.acquire()
        try:
            await self._conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            await self._conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            self._lock.release()


def read_submissions(path: Path | str) -> list[Submission]:
    """Every submission in a ledger file, oldest first (read-only; for CLIs)."""
    path = Path(path)
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return [_row(tuple(r)) for r in conn.execute(f"{_SELECT} ORDER BY created_at").fetchall()]
    finally:
        conn.close()


def _snapshot(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The columns a server batch object fills: status, counts, times (JSON text)."""
    return {"status": snapshot.get("status"), "counts": json.dumps(snapshot.get("counts") or {}),
            "times": json.dumps(snapshot.get("times") or {})}


def _where(role: str | None, states: Sequence[str] | None) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if role is not None:
        clauses.append("role = ?")
        params.append(role)
    if states is not None:
        clauses.append(f"state IN ({', '.join('?' * len(states))})")
        params.extend(states)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _row(values: tuple[Any, ...]) -> Submission:
    data = dict(zip(_COLUMNS, values, strict=True))
    data["counts"] = json.loads(data["counts"] or "{}")
    data["times"] = json.loads(data["times"] or "{}")
    return Submission(**data)
