"""Opening the store's SQLite files: one aiosqlite connection per file, WAL, autocommit.

Autocommit (``isolation_level=None``) means every statement outside an explicit ``BEGIN`` is its own
transaction, so no coroutine can leave a transaction open that another coroutine's statements would join.
``synchronous=NORMAL`` in WAL mode: a power cut may lose the last commits, never corrupt the file.
"""

from __future__ import annotations

from pathlib import Path

import aiosqlite


async def open_wal(path: Path, schema: str) -> aiosqlite.Connection:
    """Connect to ``path`` (creating its folder), set WAL pragmas and run ``schema`` (a script)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA busy_timeout=10000")
        await conn.executescript(schema)
    except BaseException:
        await conn.close()
        raise
    return conn
