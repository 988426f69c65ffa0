"""Call cache: every provider answer, keyed by what was asked, so a rerun makes zero network calls.

Contract (docs/INTERFACES.md, ``store/cache.py``):

- ``cache_key(role=, model=, body=, sample_index=, namespace=)`` is the sha256 hex digest of the
  canonical JSON (sorted keys, no spaces, UTF-8) of exactly those five fields. The API key and the
  base URL are deliberately *not* parameters: the same request to a mirror of the same model is the same
  answer, and a secret must never be derivable from, or stored next to, a key.
- ``CallCache`` stores one JSON value per key in an SQLite file (WAL journal) through exactly one
  aiosqlite connection. aiosqlite runs every statement on one worker thread, in order, so hundreds of
  coroutines may call ``get``/``put`` concurrently. Each ``put`` is a single ``INSERT OR REPLACE``
  executed in autocommit mode, i.e. in its own transaction: a reader (this connection or another process)
  sees the old row or the whole new row, never part of one, and a crash mid-write leaves no hit.
- A stored value that does not parse as a JSON object (which SQLite's atomicity should make impossible)
  is reported as a miss, never returned.

>>> cache_key(role="llm", model="m", body={"b": 1, "a": [1, 2]}) == cache_key(
...     role="llm", model="m", body={"a": [1, 2], "b": 1})
True
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import aiosqlite

from store.errors import UsageError
from store.sqlite import open_wal

__all__ = ["CacheError", "CallCache", "cache_key", "canonical_json"]

LOG = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key        TEXT PRIMARY KEY,
    role       TEXT NOT NULL,
    model      TEXT NOT NULL,
    value      TEXT NOT NULL,
    created_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID
"""


class CacheError(UsageError):
    """A cache input that cannot be used (message says what, and how to fix it)."""


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace; the same data always gives the same text.

    >>> canonical_json({"b": 1, "a": "é"})
    '{"a":"é","b":1}'
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def cache_key(
    *,
    role: str,
    model: str,
    body: Mapping[str, Any],
    sample_index: int = 0,
    namespace: str = "",
) -> str:
    """sha256 hex of the canonical JSON of {role, model, body, sample_index, namespace}.

    ``sample_index`` separates repeated samples of one request (n independent answers to the same
    prompt); ``namespace`` is the user's switch to force fresh answers without touching the prompts.
    """
    if not isinstance(sample_index, int) or isinstance(sample_index, bool) or sample_index < 0:
        raise CacheError(f"cache_key: sample_index must be an integer >= 0, got {sample_index!r}")
    payload = {
        "role": role,
        "model": model,
        "body": dict(body),
        "sample_index": sample_index,
        "namespace": namespace,
    }
    try:
        text = canonical_json(payload)
    except (TypeError, ValueError) as exc:
        raise CacheError(
            f"cache_key: request body is not plain JSON ({exc}); pass text, numbers, lists and dicts "
            "only (images as their sha256, not bytes)"
        ) from None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class CallCache:
    """Async key -> JSON-object cache on one SQLite file; see the module docstring for guarantees.

    Use ``cache = await CallCache.open(path)`` or ``async with await CallCache.open(path) as cache``.
    """

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        # Built by ``open``: the connection must be created inside the running event loop.
        self._conn = conn
        self.path = path
        self._hits = 0
        self._misses = 0
        self._puts = 0
        self._corrupt = 0
        self._closed = False

    @classmethod
    async def open(cls, path: Path | str) -> CallCache:
        """Open (creating if needed) the cache file at ``path``."""
        path = Path(path)
        # A lost cache entry (power cut, NORMAL sync) is only a re-asked question.
        conn = await open_wal(path, _SCHEMA)
        return cls(conn, path)

    async def epoch(self) -> str:
        """This cache file's epoch: a random id written when the file is first opened, so a deleted and
        recreated cache is a new epoch (agent/lifecycle/reuse.py keys finished classes on it)."""
        await self._conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', ?)", (uuid.uuid4().hex,))
        rows = list(await self._conn.execute_fetchall("SELECT value FROM meta WHERE key = 'epoch'"))
        return str(rows[0][0])

    async def get(self, key: str) -> dict[str, Any] | None:
        """The stored value for ``key``, or ``None`` (a miss)."""
        # execute_fetchall: one hop to aiosqlite's thread instead of three (execute, fetch, close).
        rows = list(await self._conn.execute_fetchall("SELECT value FROM calls WHERE key = ?", (key,)))
        row = rows[0] if rows else None
        if row is None:
            self._misses += 1
            return None
        value = _decode(row[0])
        if value is None:
            LOG.warning("cache %s: entry %s is not a JSON object; treating it as a miss", self.path, key)
            self._corrupt += 1
            self._misses += 1
            return None
        self._hits += 1
        return value

    async def get_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The stored values of those ``keys`` that hit (one query per 500 keys); misses are absent."""
        found: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start:start + 500]
            marks = ",".join("?" * len(chunk))
            rows = await self._conn.execute_fetchall(f"SELECT key, value FROM calls WHERE key IN ({marks})", chunk)
            for key, text in rows:
                value = _decode(text)
                if value is None:
                    LOG.warning("cache %s: entry %s is not a JSON object; treating it as a miss", self.path, key)
                    self._corrupt += 1
                else:
                    found[str(key)] = value
        self._hits += len(found)
        self._misses += len(unique) - len(found)
        return found

    async def put_many(self, values: Mapping[str, Mapping[str, Any]], *, role: str, model: str) -> None:
        """``put`` of each (key, value), one after another (each its own transaction)."""
        # Not executemany: its unclosed cursor, finalised on the loop thread while aiosqlite's thread uses
        # the connection, failed a run with "InterfaceError: bad parameter or other API misuse".
        for key, value in values.items():
            await self.put(key, value, role=role, model=model)

    async def put(self, key: str, value: Mapping[str, Any], *, role: str, model: str) -> None:
        """Store ``value`` under ``key`` (replacing any older value); committed when this returns."""
        try:
            text = canonical_json(dict(value))
        except (TypeError, ValueError) as exc:
            raise CacheError(f"cache put: value for {role}/{model} is not plain JSON ({exc})") from None
        # One statement in autocommit mode = one transaction: the row appears whole or not at all.
        await self._conn.execute(
            "INSERT OR REPLACE INTO calls (key, role, model, value, created_at) VALUES (?, ?, ?, ?, ?)",
            (key, role, model, text, time.time()),
        )
        self._puts += 1

    async def stats(self) -> dict[str, Any]:
        """Entry counts (total and per role) plus this session's hits, misses, puts and corrupt rows."""
        async with self._conn.execute("SELECT role, COUNT(*) FROM calls GROUP BY role") as cur:
            by_role = {str(role): int(n) for role, n in await cur.fetchall()}
        return {
            "entries": sum(by_role.values()),
            "by_role": by_role,
            "hits": self._hits,
            "misses": self._misses,
            "puts": self._puts,
            "corrupt": self._corrupt,
        }

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        await self._conn.close()

    async def __aenter__(self) -> CallCache:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _decode(text: object) -> dict[str, Any] | None:
    """Parse a stored value; anything but a JSON object is ``None`` (a miss, never a bad hit)."""
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
