"""Opening the store's SQLite files: one aiosqlite connection per file, WAL, autocommit.

Autocommit (``isolation_level=None``) means every statement outside an explicit ``BEGIN`` is its own
transaction, so no coroutine can leave a transaction open that another coroutine's statements would join.
``synchronous=NORMAL`` in WAL mode: a power cut may lose the last commits, never corrupt the file.
"""

from __future__ import annotations

from pathlib import Path

import aiosqlite

PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA busy_timeout=10000")


async def connect_wal(path: Path, *, autocommit: bool = False) -> aiosqlite.Connection:
    """Connect to ``path`` (creating its folder) with the store's WAL pragmas. ``autocommit`` sets
    ``isolation_level=None``; LangGraph's saver manages its own commits and wants the default."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = await (aiosqlite.connect(path, isolation_level=None) if autocommit else aiosqlite.connect(path))
    try:
        for pragma in PRAGMAS:
            await conn.execute(pragma)
    except BaseException:
        await conn.close()
        raise
    return conn


async def open_wal(path: Path, schema: str) -> aiosqlite.Connection:
    """Connect to ``path`` (creating its folder), autocommit, WAL pragmas, then run ``schema`` (a script)."""
    conn = await connect_wal(path, autocommit=True)
    try:
        await conn.executescript(schema)
    except BaseException:
        await conn.close()
        raise
    return conn
