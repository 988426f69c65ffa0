"""Traces: one row per provider call, written in batches so tracing never dominates a call's cost.

Contract (docs/INTERFACES.md, ``store/traces.py``):

- ``TraceRecord`` holds one call: who asked (run, class, node, round, role), what (operation, model,
  request with images as ``{"sha256": ...}``), the answer (text, finish reason, usage, image count), and
  how it went (latency, cache hit, attempts, status, error, parser drops, cost, start time).
- SQLite columns use the OpenTelemetry GenAI semantic-convention names where one exists
  (``gen_ai.operation.name``, ``gen_ai.request.model``, ``gen_ai.usage.input_tokens``,
  ``gen_ai.usage.output_tokens``, ``gen_ai.response.finish_reasons``, ``error.type``); the rest keep the
  record's field names. ``request`` is JSON text.
- Text stored once: each distinct line of a request's strings and of a reply (list markers split off) is
  kept once in the ``segments`` table, and a row refers to it by id (``store/trace_text.py`` has the
  encoding; the row's ``encoding`` column says which rows do). Every reader here decodes, so callers get
  the very request dict and reply string that were added. An older file (all rows inline) reads as before
  and takes packed rows when a run resumes into it. The SQL aggregates (counts, cost) decode nothing.
- ``TraceStore.add`` is synchronous and only appends to an in-memory buffer. A background task writes the
  buffer every ``flush_interval_s`` or as soon as ``batch_size`` records are waiting, with one
  ``executemany`` in one transaction (new segments in the same one; a bounded memory of segments already
  written keeps hot ones from being re-sent). ``close`` writes everything still buffered. A process killed
  before ``close`` loses at most the unflushed buffer: traces are diagnostics, the call cache is what
  makes a rerun free.
- Guard: ``add`` raises ``ValueError`` for a request holding a ``data:`` URI or over 64 KB of JSON (the
  original text, before packing) —
  traces hold image hashes, never image bytes (and an API key belongs in no request body).
- Queries (``query``, ``get``, and the sync ``read_traces`` for CLIs) return records ordered by
  ``started_at`` then ``call_id``; async queries first flush, so they see every record added so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import aiosqlite

from store.sqlite import open_wal
from store.trace_schema import (
    COST_BY_CLASS_SQL,
    FORMAT_VERSION,
    INSERT_SQL,
    SCHEMA,
    SENT_SPEND_SQL,
    TraceRecord,
    TraceStoreError,
    cost_sql,
    counts_from_rows,
    counts_sql,
    migrate_sql,
    pack_row,
    record_from_row,
    replace_fields,
    row_from_record,
    row_tokens,
    select_for,
    select_sql,
    update_sql,
)
from store.trace_text import INSERT_SEGMENT_SQL, SEGMENT_BATCH, RecentSegments, ids_of, segments_sql, settle

__all__ = ["TraceRecord", "TraceStore", "TraceStoreError", "iter_traces", "read_costs", "read_counts", "read_traces"]

LOG = logging.getLogger(__name__)


class TraceStore:
    """Buffered, batched trace writer plus query helpers on one SQLite file (one connection)."""

    def __init__(self, conn: aiosqlite.Connection, path: Path, batch_size: int, flush_interval_s: float):
        # Built by ``open``: the connection and the flusher task need the running event loop.
        self._conn = conn
        self.path = path
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self._buffer: dict[str, dict[str, Any]] = {}  # call_id -> column row; dicts keep add order
        self._write_lock = asyncio.Lock()  # one transaction at a time on the shared connection
        self._wake = asyncio.Event()
        self._closed = False
        self._flusher: asyncio.Task[None] | None = None
        self._last_error: BaseException | None = None
        self._recent = RecentSegments()  # segments known to be in the file: not re-sent, not re-checked

    @classmethod
    async def open(
        cls, path: Path | str, batch_size: int = 64, flush_interval_s: float = 0.5
    ) -> TraceStore:
        """Open (creating if needed) the trace file at ``path`` and start the background flusher."""
        if batch_size < 1 or flush_interval_s <= 0:
            raise TraceStoreError(
                f"traces: batch_size must be >= 1 and flush_interval_s > 0, "
                f"got {batch_size} and {flush_interval_s}"
            )
        # Autocommit: transactions are opened explicitly (BEGIN ... COMMIT) under the write lock.
        path = Path(path)
        conn = await open_wal(path, SCHEMA)
        try:
            version = int(next(iter(await conn.execute_fetchall("PRAGMA user_version")))[0])
            _check_version(path, version)
            present = {str(r[1]) for r in await conn.execute_fetchall("PRAGMA table_info(traces)")}
            for statement in migrate_sql(present):  # a traces.sqlite written by an older ltgc
                await conn.execute(statement)
            if version < FORMAT_VERSION:
                await conn.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
        except BaseException:
            await conn.close()
            raise
        store = cls(conn, path, batch_size, flush_interval_s)
        store._flusher = asyncio.get_running_loop().create_task(store._flush_loop())
        return store

    def add(self, record: TraceRecord) -> None:
        """Buffer ``record`` (validated and serialised now, so later edits to it do not leak in)."""
        if self._closed:
            raise TraceStoreError(f"traces {self.path}: add() after close()")
        row = row_from_record(record)  # raises ValueError on a data: URI / oversized request
        if record.call_id in self._buffer:
            raise ValueError(f"traces: call_id {record.call_id} added twice")
        self._buffer[record.call_id] = row
        if len(self._buffer) >= self.batch_size:
            self._wake.set()

    async def flush(self) -> None:
        """Write every buffered record now (one transaction)."""
        async with self._write_lock:
            if not self._buffer:
                return
            batch = self._buffer
            self._buffer = {}
            try:
                pending = [(row, *pack_row(row)) for row in batch.values()]
                await self._conn.execute("BEGIN IMMEDIATE")
                # Ids the memory does not vouch for: read their bodies under the write lock, so what
                # settle() decides still holds at COMMIT.
                asked = {h for _, _, segments in pending for h in segments if self._recent.get(h) is None}
                stored = await _fetch_bodies(asked, self._fetch)
                rows, new, known = settle(pending, self._recent, stored)
                if new:
                    await self._conn.executemany(INSERT_SEGMENT_SQL, list(new.items()))
                await self._conn.executemany(INSERT_SQL, [tuple(r.values()) for r in rows])
                await self._conn.execute("COMMIT")
                self._recent.add(known)
            except BaseException:
                with contextlib.suppress(Exception):
                    await self._conn.execute("ROLLBACK")
                # Put the batch back in front so nothing is lost and add order is kept.
                self._buffer = {**batch, **self._buffer}
                raise

    async def query(
        self,
        run_id: str | None = None,
        class_name: str | None = None,
        node: str | None = None,
        status: str | None = None,
        cache_hit: bool | None = None,
        round: int | None = None,
        role: str | None = None,
    ) -> list[TraceRecord]:
        """Records matching every given filter, ordered by ``started_at`` then ``call_id``."""
        await self.flush()
        filters = {
            "run_id": run_id, "class_name": class_name, "node": node, "status": status,
            "cache_hit": cache_hit, "round": round, "role": role,
        }
        sql, params = select_sql(filters)
        async with self._conn.execute(sql, params) as cur:
            rows = [tuple(r) for r in await cur.fetchall()]
        return await self._decode(rows)

    async def query_chunks(self, run_id: str | None = None, cache_hit: bool | None = None, *,
                           unpriced: bool = False, size: int = 2000) -> AsyncIterator[list[TraceRecord]]:
        """:meth:`query`'s records (``unpriced``: only those without ``cost_usd``) ``size`` at a time, so a
        reader of a whole run's rows (10^5-10^6 at dataset scale) holds one chunk, never the run."""
        await self.flush()
        sql, params = select_sql({"run_id": run_id, "cache_hit": cache_hit}, unpriced=unpriced)
        async with self._conn.execute(sql, params) as cur:
            while rows := [tuple(r) for r in await cur.fetchmany(size)]:
                yield await self._decode(rows)

    async def sent_spend(self, run_id: str) -> tuple[int, float]:
        """``(calls, usd)``: the calls of ``run_id`` that were sent and carry a price, and their sum; one
        aggregate, nothing decoded (the budget's seed: issue 23, 10^5 rows read back took seconds)."""
        await self.flush()
        rows = list(await self._conn.execute_fetchall(SENT_SPEND_SQL, (run_id,)))
        return int(rows[0][0]), float(rows[0][1])

    async def cost_by_class(self, run_id: str) -> dict[str, float | None]:
        """Spend per class of ``run_id``: the sum of its rows' ``cost_usd``, ``None`` for a class none of
        whose rows has a price. One aggregate query: no row is decoded, so the cost does not grow with the
        cache-hit rows that every warm rerun of the folder adds."""
        await self.flush()
        rows = await self._conn.execute_fetchall(COST_BY_CLASS_SQL, (run_id,))
        return {str(name): (float(total) if count else None) for name, total, count in rows}

    async def counts(self, run_id: str, since: float = 0.0) -> dict[str, dict[str, dict[str, int]]]:
        """Calls, cache hits, refused, stopped, sent, requests, errors, tokens per class and role of
        ``run_id`` (rows started at or after ``since``): one SQL aggregate (store.trace_schema.counts_sql)."""
        await self.flush()
        sql, params = counts_sql({"run_id": run_id}, since)
        rows = await self._conn.execute_fetchall(sql, params)
        return counts_from_rows([tuple(r) for r in rows])

    async def get(self, call_id: str) -> TraceRecord | None:
        """The record with this ``call_id``, or ``None``."""
        await self.flush()
        return await self._get_stored(call_id)

    async def annotate(self, call_id: str, **fields: Any) -> None:
        """Set fields of a record already added (e.g. ``parse_dropped=3``, ``cost_usd=0.002``).

        Raises ``KeyError`` for an unknown ``call_id`` and ``ValueError`` for an unknown field.
        """
        if self._patch_buffered(call_id, fields):
            return
        async with self._write_lock:
            # Re-check: a failed flush may have put the record back in the buffer meanwhile.
            if self._patch_buffered(call_id, fields):
                return
            current = await self._get_stored(call_id)
            if current is None:
                raise KeyError(f"traces: no record with call_id {call_id}")
            sql, params = update_sql(call_id, current, fields)
            await self._conn.execute(sql, params)

    async def close(self) -> None:
        """Stop the flusher, write everything buffered and close the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:
            # Let the flusher finish its current transaction and exit, rather than cancelling it
            # between BEGIN and COMMIT.
            self._wake.set()
            await self._flusher
        try:
            await self.flush()
        finally:
            await self._conn.close()

    async def __aenter__(self) -> TraceStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _patch_buffered(self, call_id: str, fields: Mapping[str, Any]) -> bool:
        row = self._buffer.get(call_id)
        if row is None:
            return False
        record = record_from_row(tuple(row.values()))
        self._buffer[call_id] = row_from_record(replace_fields(record, fields))
        return True

    async def _get_stored(self, call_id: str) -> TraceRecord | None:
        sql, params = select_sql({"call_id": call_id})
        async with self._conn.execute(sql, params) as cur:
            row = await cur.fetchone()
        return None if row is None else (await self._decode([tuple(row)]))[0]

    async def _fetch(self, ids: list[int]) -> Iterable[tuple[Any, ...]]:
        return [tuple(r) for r in await self._conn.execute_fetchall(segments_sql(len(ids)), ids)]

    async def _decode(self, rows: list[tuple[Any, ...]]) -> list[TraceRecord]:
        wanted = ids_of(_tokens(rows))
        stored = await _fetch_bodies(set(wanted), self._fetch)
        return _records(self.path, rows, {wanted[h]: body for h, body in stored.items()})

    async def _flush_loop(self) -> None:
        """Write the buffer every ``flush_interval_s``, or early when a full batch is waiting."""
        while not self._closed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.flush_interval_s)
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:  # keep the flusher alive; records stay buffered for a retry
                if repr(exc) != repr(self._last_error):
                    LOG.warning("traces %s: flush failed, will retry: %s", self.path, exc)
                self._last_error = exc


async def _fetch_bodies(ids: set[int],
                       fetch: Callable[[list[int]], Awaitable[Iterable[tuple[Any, ...]]]]) -> dict[int, str]:
    """The stored bodies of ``ids`` (those present), :data:`SEGMENT_BATCH` ids per query."""
    ordered, bodies = sorted(ids), dict[int, str]()
    for start in range(0, len(ordered), SEGMENT_BATCH):
        bodies.update((int(h), str(body)) for h, body in await fetch(ordered[start:start + SEGMENT_BATCH]))
    return bodies


def _tokens(rows: list[tuple[Any, ...]]) -> set[str]:
    found: set[str] = set()
    for row in rows:
        found |= row_tokens(row)
    return found


def _records(path: Path, rows: list[tuple[Any, ...]], bodies: Mapping[str, str]) -> list[TraceRecord]:
    """Decoded records; a damaged packed row is one clear error naming the file and the call."""
    out, memo = [], dict[str, str]()
    for row in rows:
        try:
            out.append(record_from_row(row, bodies, memo))
        except TraceStoreError:
            raise
        except ValueError as exc:  # SegmentError, or packed JSON that does not parse
            raise TraceStoreError(f"{path}: trace {row[0]} does not decode ({exc}); the file is damaged — "
                                  "rerun into a fresh run folder to get its traces back") from None
    return out


def _check_version(path: Path, version: int) -> None:
    if version > FORMAT_VERSION:
        raise TraceStoreError(f"{path}: trace file format {version} is newer than this ltgc's "
                              f"({FORMAT_VERSION}); read it with the ltgc that wrote it, or upgrade")


def read_traces(path: Path | str, **filters: Any) -> list[TraceRecord]:
    """Sync, read-only query of a trace file (for CLIs); same filters and order as ``query``."""
    return list(iter_traces(path, **filters))


def iter_traces(path: Path | str, *, unpriced: bool = False, chunk: int = 2000,
                **filters: Any) -> Iterator[TraceRecord]:
    """:func:`read_traces` as a stream, ``chunk`` rows decoded at a time (``unpriced``: only rows without
    ``cost_usd``): a reader of 10^5-10^6 rows (``agent.traces export``) holds one chunk, not the run."""
    path = Path(path)
    if not path.is_file():
        raise TraceStoreError(f"{path}: no trace file there (expected a run dir's traces.sqlite)")
    sql, params = select_sql(filters, unpriced=unpriced)
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise TraceStoreError(f"{path}: cannot open trace file ({exc})") from None
    try:
        try:
            _check_version(path, int(conn.execute("PRAGMA user_version").fetchone()[0]))
            present = {str(r[1]) for r in conn.execute("PRAGMA table_info(traces)").fetchall()}
            cursor = conn.execute(select_for(present, sql), params)
        except sqlite3.DatabaseError as exc:
            raise TraceStoreError(f"{path}: not a readable trace file ({exc})") from None
        while True:
            try:
                rows = [tuple(r) for r in cursor.fetchmany(chunk)]
                if not rows:
                    return
                wanted = ids_of(_tokens(rows))
                ids = sorted(wanted)
                bodies: dict[str, str] = {}
                for start in range(0, len(ids), SEGMENT_BATCH):
                    part = ids[start:start + SEGMENT_BATCH]
                    bodies.update((wanted[h], body) for h, body in conn.execute(segments_sql(len(part)), part))
            except sqlite3.DatabaseError as exc:
                raise TraceStoreError(f"{path}: not a readable trace file ({exc})") from None
            yield from _records(path, rows, bodies)
    finally:
        conn.close()


def read_costs(path: Path | str, **filters: Any) -> dict[str, float]:
    """Sync, read-only: per class, the sum of the recorded ``cost_usd`` of rows matching ``filters`` (rows
    without one are left out: price them with :func:`iter_traces` ``unpriced=True``). One aggregate."""
    path = Path(path)
    sql, params = cost_sql(filters)
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            return {str(name): float(total) for name, total in conn.execute(sql, params)}
    except sqlite3.DatabaseError as exc:
        raise TraceStoreError(f"{path}: not a readable trace file ({exc})") from None


def read_counts(path: Path | str, since: float = 0.0, **filters: Any) -> dict[str, dict[str, dict[str, int]]]:
    """Sync, read-only :meth:`TraceStore.counts` (for CLIs): the same SQL and definitions, with the
    filters of :func:`read_traces` (``run_id=``, ``class_name=``, ``node=``, ...)."""
    path = Path(path)
    if not path.is_file():
        raise TraceStoreError(f"{path}: no trace file there (expected a run dir's traces.sqlite)")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        present = {str(r[1]) for r in conn.execute("PRAGMA table_info(traces)").fetchall()}
        sql, params = counts_sql(filters, since)
        rows = conn.execute(select_for(present, sql), params).fetchall()
    except sqlite3.DatabaseError as exc:
        raise TraceStoreError(f"{path}: not a readable trace file ({exc})") from None
    finally:
        conn.close()
    return counts_from_rows(rows)
