"""Call cache: key determinism and sensitivity, concurrency, persistence, crash safety."""

from __future__ import annotations

import asyncio
import inspect
import json
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from store.cache import CacheError, CallCache, cache_key

BODY: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "Please briefly describe the image of the class [cat]."},
            {"type": "image_url", "image_url": {"sha256": "ab" * 32, "detail": "low"}},
        ]},
    ],
    "temperature": 0.7,
    "max_tokens": 256,
}


def _sql(path: Path, query: str) -> Any:
    """First row of ``query`` on a plain, closed-after-use sqlite3 connection."""
    with closing(sqlite3.connect(path)) as db, db:
        return db.execute(query).fetchone()


def _key(**changes: Any) -> str:
    args: dict[str, Any] = {"role": "lmm", "model": "gpt-4o-mini", "body": BODY, "sample_index": 0,
                            "namespace": ""}
    args.update(changes)
    return cache_key(**args)


def test_key_is_deterministic_and_ignores_dict_order() -> None:
    reordered = json.loads(json.dumps(BODY))
    reordered = {k: reordered[k] for k in reversed(list(reordered))}
    assert _key() == _key(body=reordered)
    assert len(_key()) == 64 and int(_key(), 16) >= 0


def test_key_matches_documented_recipe() -> None:
    # An independent implementation of the contract: sha256 of canonical JSON of the five fields.
    import hashlib

    payload = {"role": "llm", "model": "m", "body": {"x": [1, "é"]}, "sample_index": 2, "namespace": "ns"}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert cache_key(role="llm", model="m", body={"x": [1, "é"]}, sample_index=2, namespace="ns") == expected


def _mutations() -> list[tuple[str, dict[str, Any]]]:
    """One changed copy of BODY per field, nested ones included."""
    out: list[tuple[str, dict[str, Any]]] = []

    def changed(path: str, edit: Any) -> None:
        body = json.loads(json.dumps(BODY))
        edit(body)
        out.append((path, body))

    changed("model", lambda b: b.update(model="gpt-4o"))
    changed("temperature", lambda b: b.update(temperature=0.71))
    changed("max_tokens", lambda b: b.update(max_tokens=257))
    changed("extra field", lambda b: b.update(seed=1))
    changed("removed field", lambda b: b.pop("max_tokens"))
    changed("message role", lambda b: b["messages"][0].update(role="system"))
    changed("prompt text", lambda b: b["messages"][0]["content"][0].update(text="Describe [cat]."))
    changed("image hash", lambda b: b["messages"][0]["content"][1]["image_url"].update(sha256="cd" * 32))
    changed("image detail", lambda b: b["messages"][0]["content"][1]["image_url"].update(detail="high"))
    changed("part order", lambda b: b["messages"][0]["content"].reverse())
    changed("int vs float", lambda b: b.update(max_tokens=256.0))
    return out


@pytest.mark.parametrize(("what", "body"), _mutations(), ids=[m[0] for m in _mutations()])
def test_any_body_change_changes_key(what: str, body: dict[str, Any]) -> None:
    assert _key(body=body) != _key(), what


def test_role_model_sample_index_and_namespace_change_key() -> None:
    keys = {_key(), _key(role="llm"), _key(model="other"), _key(sample_index=1), _key(sample_index=2),
            _key(namespace="fresh")}
    assert len(keys) == 6


def test_secrets_and_base_url_are_not_parameters() -> None:
    params = set(inspect.signature(cache_key).parameters)
    assert params == {"role", "model", "body", "sample_index", "namespace"}
    with pytest.raises(TypeError):
        cache_key(role="llm", model="m", body={}, api_key="sk-secret")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        cache_key(role="llm", model="m", body={}, base_url="http://x")  # type: ignore[call-arg]


def test_bad_key_inputs_give_clear_errors() -> None:
    with pytest.raises(CacheError, match="not plain JSON"):
        cache_key(role="lmm", model="m", body={"image": b"\x89PNG"})
    with pytest.raises(CacheError, match="sample_index"):
        cache_key(role="lmm", model="m", body={}, sample_index=-1)


async def test_get_put_round_trip_and_stats(tmp_path: Path) -> None:
    async with await CallCache.open(tmp_path / "cache.sqlite") as cache:
        assert await cache.get("k1") is None
        await cache.put("k1", {"text": "A photo of the class cat.", "usage": {"in": 3}}, role="llm", model="m")
        await cache.put("k2", {"b64": "AAAA"}, role="t2i", model="img")
        assert await cache.get("k1") == {"text": "A photo of the class cat.", "usage": {"in": 3}}
        await cache.put("k1", {"text": "replaced"}, role="llm", model="m")
        assert await cache.get("k1") == {"text": "replaced"}
        stats = await cache.stats()
    assert stats["entries"] == 2 and stats["by_role"] == {"llm": 1, "t2i": 1}
    assert (stats["hits"], stats["misses"], stats["puts"]) == (2, 1, 3)
    row = _sql(tmp_path / "cache.sqlite", "SELECT role, model, created_at FROM calls WHERE key = 'k2'")
    assert row[:2] == ("t2i", "img") and abs(row[2] - time.time()) < 60


async def test_file_uses_wal(tmp_path: Path) -> None:
    async with await CallCache.open(tmp_path / "c.sqlite"):
        pass
    mode = _sql(tmp_path / "c.sqlite", "PRAGMA journal_mode")[0]
    assert mode == "wal"


async def test_non_json_value_is_rejected(tmp_path: Path) -> None:
    async with await CallCache.open(tmp_path / "c.sqlite") as cache:
        with pytest.raises(CacheError, match="not plain JSON"):
            await cache.put("k", {"raw": b"bytes"}, role="llm", model="m")
        assert await cache.get("k") is None


async def test_corrupt_value_is_a_miss_not_a_hit(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    async with await CallCache.open(path) as cache:
        await cache.put("k", {"ok": 1}, role="llm", model="m")
    _sql(path, "UPDATE calls SET value = '{\"ok\": ' WHERE key = 'k'")
    async with await CallCache.open(path) as cache:
        assert await cache.get("k") is None
        assert (await cache.stats())["corrupt"] == 1


async def test_200_concurrent_puts_and_gets_are_consistent(tmp_path: Path) -> None:
    async with await CallCache.open(tmp_path / "c.sqlite") as cache:

        async def worker(i: int) -> dict[str, Any] | None:
            key = cache_key(role="llm", model="m", body={"i": i})
            before = await cache.get(key)
            await cache.put(key, {"i": i, "pad": "x" * (i * 10)}, role="llm", model="m")
            after = await cache.get(key)
            assert before is None
            return after

        results = await asyncio.gather(*(worker(i) for i in range(200)))
        assert results == [{"i": i, "pad": "x" * (i * 10)} for i in range(200)]
        assert (await cache.stats())["entries"] == 200


async def test_reopened_file_keeps_hits(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    key = _key()
    async with await CallCache.open(path) as cache:
        await cache.put(key, {"text": "cached"}, role="lmm", model="gpt-4o-mini")
    async with await CallCache.open(path) as cache:
        assert await cache.get(key) == {"text": "cached"}
        assert (await cache.stats())["hits"] == 1


_WRITER = """
import asyncio, sys
from store.cache import CallCache
async def main():
    cache = await CallCache.open(sys.argv[1])
    i = 0
    while True:
        await cache.put(f"k{i}", {"i": i, "pad": str(i) * 20000}, role="llm", model="m")
        if i == 20:
            print("ready", flush=True)
        i += 1
asyncio.run(main())
"""


async def test_killed_writer_never_leaves_a_corrupt_hit(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    root = Path(__file__).resolve().parents[2]
    with subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], cwd=root, stdout=subprocess.PIPE) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
            await asyncio.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert _sql(path, "PRAGMA integrity_check")[0] == "ok"
    async with await CallCache.open(path) as cache:
        found = 0
        for i in range(100_000):
            value = await cache.get(f"k{i}")
            if value is None:
                break
            assert value == {"i": i, "pad": str(i) * 20000}
            found += 1
        assert found > 20
        # Nothing beyond the first gap: each put committed before the next began.
        assert (await cache.stats())["entries"] == found
