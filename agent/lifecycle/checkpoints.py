"""The one place that opens a run's ``checkpoints.sqlite``: always in LangGraph's strict msgpack mode.

Contract:

- :func:`open_checkpoints` (async, read-write: the run driver) and :func:`read_checkpoints` (sync,
  read-only: the inspector ``agent.traces`` and the report) are the only ways the code opens the file;
  both give a LangGraph SQLite saver whose serializer is :func:`strict_serializer`.
- ``strict_serializer()`` is LangGraph's ``JsonPlusSerializer(allowed_msgpack_modules=None)`` — the same as
  running with ``LANGGRAPH_STRICT_MSGPACK=true``: only LangGraph's built-in safe types
  (``langgraph.checkpoint.serde._msgpack.SAFE_MSGPACK_TYPES``) are revived. Where LangGraph would then
  quietly hand back the raw data of a blocked type, ours raises :class:`UnsafeCheckpointError` (one line,
  a :class:`store.errors.UsageError`): a checkpoint that names any other type or method was not written
  by ltgc (the class state is plain JSON-like data, agent/graph/state.py), so the run folder has been
  tampered with or comes from somewhere else, and nothing in it is imported or called.
- Why: the default mode imports and calls whatever class a checkpoint names, so anyone able to write a
  run's ``checkpoints.sqlite`` (a shared run folder, a run copied from elsewhere) could run code on
  ``--resume``, ``agent.traces RUN status`` or the report.
- :func:`verify_checkpoints` decodes every checkpoint and pending write of a run's threads once (before a
  ``--resume`` continues any class), so a tampered file stops the run before anything is sent.
- :func:`keep_latest_checkpoint` prunes a finished class's history (the only SQL the code writes against the
  saver's tables besides LangGraph's own, so it lives next to the one place that opens them).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from langgraph.checkpoint.serde.event_hooks import SerdeEvent, register_serde_event_listener
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from agent.lifecycle.folder import CHECKPOINTS
from store.errors import UsageError
from store.sqlite import connect_wal

# LangGraph logs its own warning for each blocked type; ours (UnsafeCheckpointError) says it once, in the
# project's words, with what to do.
logging.getLogger("langgraph.checkpoint.serde.jsonplus").setLevel(logging.ERROR)

__all__ = ["UnsafeCheckpointError", "keep_latest_checkpoint", "open_checkpoints", "read_checkpoints",
           "strict_serializer", "verify_checkpoints"]


class UnsafeCheckpointError(UsageError):
    """A checkpoint names a type or method outside LangGraph's safe list: it was not loaded."""


class _StrictSerializer(JsonPlusSerializer):
    """Strict msgpack mode that refuses a blocked type instead of returning its raw data."""

    def __init__(self) -> None:
        super().__init__(allowed_msgpack_modules=None)
        self.where = CHECKPOINTS

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        blocked: list[SerdeEvent] = []

        def listen(event: SerdeEvent) -> None:
            if "blocked" in event.get("kind", ""):
                blocked.append(event)

        unregister = register_serde_event_listener(listen)
        try:
            value = super().loads_typed(data)
        finally:
            unregister()
        if blocked:
            event = blocked[0]
            what = ".".join(p for p in (event.get("module"), event.get("name"), event.get("method")) if p)
            raise UnsafeCheckpointError(
                f"{self.where}: a checkpoint names {what}, which ltgc never writes; nothing was imported or "
                "called. The run folder was changed outside ltgc (or comes from elsewhere): do not resume it — "
                "start a new run with a new --out (or delete checkpoints.sqlite to restart this one)")
        return value


def strict_serializer(where: str | Path = CHECKPOINTS) -> JsonPlusSerializer:
    """LangGraph's serializer in strict msgpack mode; a blocked type raises :class:`UnsafeCheckpointError`."""
    serde = _StrictSerializer()
    serde.where = str(where)
    return serde


@contextlib.asynccontextmanager
async def open_checkpoints(path: Path) -> AsyncIterator[AsyncSqliteSaver]:
    """The run's one read-write checkpoint connection, built inside the running loop (docs/DESIGN.md §10: one per
    file), WAL like every store file (store/sqlite.py). ``synchronous=NORMAL``: a commit survives a killed
    process (what ``--resume`` needs) without an fsync per graph step; only a power cut can lose the last
    steps, and those are re-run from the call cache."""
    conn = await connect_wal(path)
    try:
        saver = AsyncSqliteSaver(conn, serde=strict_serializer(path))
        await saver.setup()  # tables first: a fresh run's first call may be adelete_thread, which does not set up
        yield saver
    finally:
        await conn.close()


@contextlib.contextmanager
def read_checkpoints(path: Path) -> Iterator[SqliteSaver]:
    """A read-only saver on ``path`` (works on a running or a killed run; never writes, never sets up)."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
    try:
        saver = SqliteSaver(conn, serde=strict_serializer(path))
        saver.is_setup = True  # the tables exist; setup() would try to write to a read-only file
        yield saver
    finally:
        conn.close()


async def verify_checkpoints(saver: AsyncSqliteSaver, run_id: str) -> None:
    """Decode every checkpoint and pending write of ``run_id``'s threads; :class:`UnsafeCheckpointError`
    on the first one that names a blocked type."""
    prefix = f"{run_id}/%"
    queries = ("SELECT type, checkpoint FROM checkpoints WHERE thread_id LIKE ?",
               "SELECT type, value FROM writes WHERE thread_id LIKE ?")
    async with saver.lock:
        rows = [row for sql in queries for row in await saver.conn.execute_fetchall(sql, (prefix,))]
    for kind, blob in rows:
        if kind is not None:
            saver.serde.loads_typed((str(kind), bytes(blob)))


async def keep_latest_checkpoint(saver: AsyncSqliteSaver, thread: str) -> None:
    """Drop a finished class's checkpoint history, keeping its latest checkpoint and that one's writes.

    A done class is only ever read back (``aget_state``: the latest checkpoint) or restarted fresh, so its
    history — one full state per graph step — is dead weight: ~150 KB per class at K = 40 before this
    (scripts/bench/bench_agent.py). The SQLite saver implements no ``aprune``; the graph uses no DeltaChannel, so
    no kept checkpoint depends on a dropped ancestor. Same lock and statements style as ``adelete_thread``.
    """
    latest = ("SELECT MAX(checkpoint_id) FROM checkpoints AS c WHERE c.thread_id = ? "
              "AND c.checkpoint_ns = {table}.checkpoint_ns")
    async with saver.lock, saver.conn.cursor() as cur:
        for table in ("writes", "checkpoints"):
            await cur.execute(f"DELETE FROM {table} WHERE thread_id = ? AND checkpoint_id < ({latest.format(table=table)})",
                              (thread, thread))
        await saver.conn.commit()
