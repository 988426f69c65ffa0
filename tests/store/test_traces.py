"""Trace store: buffering and batching, the no-image-bytes guard, queries, annotate, read_traces."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from store.traces import TraceRecord, TraceStore, TraceStoreError, iter_traces, read_costs, read_traces


def _rec(**changes: Any) -> TraceRecord:
    values: dict[str, Any] = {
        "run_id": "r1", "class_name": "red fox", "node": "describe", "role": "lmm", "operation": "chat",
        "model": "gpt-4o-mini", "request": {"prompt": "Describe [red fox].", "image": {"sha256": "ab" * 32}},
        "response_text": "A photo of the class red fox, with a bushy tail.", "finish_reason": "stop",
        "input_tokens": 120, "output_tokens": 14, "latency_s": 0.8, "attempts": 1,
    }
    values.update(changes)
    return TraceRecord(**values)


def _count(path: Path) -> int:
    with closing(sqlite3.connect(path)) as db:
        return int(db.execute("SELECT COUNT(*) FROM traces").fetchone()[0])


async def _wait_for_rows(path: Path, n: int, timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while _count(path) < n:
        assert loop.time() < deadline, f"only {_count(path)} of {n} rows flushed"
        await asyncio.sleep(0.01)


@pytest.fixture
async def lazy_store(tmp_path: Path) -> AsyncIterator[TraceStore]:
    """A store that flushes only when asked (huge batch, long interval)."""
    store = await TraceStore.open(tmp_path / "traces.sqlite", batch_size=10_000, flush_interval_s=60)
    yield store
    await store.close()


async def test_add_buffers_until_flush(lazy_store: TraceStore) -> None:
    for i in range(5):
        lazy_store.add(_rec(started_at=float(i)))
    await asyncio.sleep(0.05)
    assert _count(lazy_store.path) == 0
    await lazy_store.flush()
    assert _count(lazy_store.path) == 5


async def test_full_batch_is_flushed_without_waiting_for_the_interval(tmp_path: Path) -> None:
    async with await TraceStore.open(tmp_path / "t.sqlite", batch_size=4, flush_interval_s=60) as store:
        for _ in range(3):
            store.add(_rec())
        await asyncio.sleep(0.05)
        assert _count(store.path) == 0
        store.add(_rec())
        await _wait_for_rows(store.path, 4)


async def test_interval_flushes_a_partial_batch(tmp_path: Path) -> None:
    async with await TraceStore.open(tmp_path / "t.sqlite", batch_size=1000, flush_interval_s=0.05) as store:
        store.add(_rec())
        await _wait_for_rows(store.path, 1, timeout_s=2.0)


async def test_close_flushes_everything_and_rejects_later_adds(tmp_path: Path) -> None:
    store = await TraceStore.open(tmp_path / "t.sqlite", batch_size=1000, flush_interval_s=60)
    records = [_rec(started_at=float(i)) for i in range(10)]
    for r in records:
        store.add(r)
    await store.close()
    await store.close()  # idempotent
    assert read_traces(tmp_path / "t.sqlite") == records
    with pytest.raises(TraceStoreError, match="after close"):
        store.add(_rec())


async def test_a_batch_is_one_transaction_and_survives_a_failed_flush(lazy_store: TraceStore) -> None:
    with closing(sqlite3.connect(lazy_store.path)) as db, db:
        db.execute("CREATE TRIGGER poison BEFORE INSERT ON traces WHEN NEW.node = 'poison' "
                   "BEGIN SELECT RAISE(ABORT, 'poisoned row'); END")
    good = [_rec(started_at=float(i)) for i in range(3)]
    bad = _rec(node="poison", started_at=3.0)
    for r in [*good[:2], bad, good[2]]:
        lazy_store.add(r)
    with pytest.raises(sqlite3.IntegrityError, match="poisoned"):
        await lazy_store.flush()
    assert _count(lazy_store.path) == 0  # rolled back whole: no row of the batch is visible
    lazy_store.add(_rec(started_at=4.0))
    await lazy_store.annotate(bad.call_id, node="summarize")
    await lazy_store.flush()
    rows = await lazy_store.query()
    assert [r.started_at for r in rows] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert rows[3].node == "summarize"


async def test_record_round_trips_exactly(lazy_store: TraceStore) -> None:
    full = _rec(round=2, images=0, cache_hit=True, status="error", error="HTTP 400: content policy",
                error_kind="refused", parse_dropped=3, cost_usd=0.0021, request={"nested": {"a": [1, "é"]}})
    lazy_store.add(full)
    assert await lazy_store.get(full.call_id) == full
    assert await lazy_store.get("0" * 32) is None


async def test_columns_use_opentelemetry_names(lazy_store: TraceStore) -> None:
    lazy_store.add(_rec(operation="image_generation", role="t2i", model="gpt-image-1", images=1,
                        input_tokens=None, output_tokens=None, error_kind=None))
    await lazy_store.flush()
    with closing(sqlite3.connect(lazy_store.path)) as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM traces").fetchone()
    for name in ("gen_ai.operation.name", "gen_ai.request.model", "gen_ai.usage.input_tokens",
                 "gen_ai.usage.output_tokens", "gen_ai.response.finish_reasons", "error.type"):
        assert name in row.keys()
    assert row["gen_ai.operation.name"] == "image_generation"
    assert row["gen_ai.request.model"] == "gpt-image-1"
    assert row["request"].startswith("{")  # JSON text


@pytest.mark.parametrize("request_body", [
    {"messages": [{"content": [{"image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]},
    {"prompt": "look: data:image/jpeg;base64,/9j/4AAQ"},
    {"u": "DATA:;base64,AAAA"},
    {"big": "x" * (64 * 1024)},
])
async def test_guard_rejects_image_bytes_and_huge_requests(
    lazy_store: TraceStore, request_body: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match="data: URI|bytes of JSON"):
        lazy_store.add(_rec(request=request_body))
    await lazy_store.flush()
    assert _count(lazy_store.path) == 0


async def test_guard_allows_ordinary_text(lazy_store: TraceStore) -> None:
    ok = _rec(request={"prompt": "metadata: none; update: soon", "image": {"sha256": "cd" * 32}})
    lazy_store.add(ok)
    assert (await lazy_store.get(ok.call_id)) == ok


@pytest.mark.parametrize("changes", [
    {"operation": "embed"}, {"status": "maybe"}, {"round": -1}, {"input_tokens": 1.5},
    {"run_id": ""}, {"request": ["not", "a", "dict"]}, {"attempts": True}, {"request": {"b": b"x"}},
])
async def test_invalid_records_are_rejected(lazy_store: TraceStore, changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        lazy_store.add(_rec(**changes))
    await lazy_store.flush()
    assert _count(lazy_store.path) == 0


async def test_query_filters_and_order(lazy_store: TraceStore) -> None:
    specs = [
        ("r1", "cat", "describe", 0, "lmm", True, "ok", 5.0),
        ("r1", "cat", "extend", 0, "llm", False, "ok", 1.0),
        ("r1", "dog", "refine", 1, "llm", False, "error", 3.0),
        ("r1", "dog", "render", 1, "t2i", False, "ok", 3.0),
        ("r2", "cat", "describe", 0, "lmm", False, "ok", 2.0),
    ]
    recs = [_rec(run_id=r, class_name=c, node=n, round=rd, role=ro, cache_hit=h, status=s, started_at=t,
                 operation="image_generation" if ro == "t2i" else "chat")
            for r, c, n, rd, ro, h, s, t in specs]
    for r in recs:
        lazy_store.add(r)

    def ids(rows: list[TraceRecord]) -> list[str]:
        return [r.call_id for r in rows]

    tied = sorted([recs[2], recs[3]], key=lambda r: r.call_id)
    assert ids(await lazy_store.query()) == ids([recs[1], recs[4], *tied, recs[0]])
    assert ids(await lazy_store.query(run_id="r1", class_name="cat")) == ids([recs[1], recs[0]])
    assert ids(await lazy_store.query(node="describe")) == ids([recs[4], recs[0]])
    assert ids(await lazy_store.query(round=1, role="t2i")) == ids([recs[3]])
    assert ids(await lazy_store.query(status="error")) == ids([recs[2]])
    assert ids(await lazy_store.query(cache_hit=True)) == ids([recs[0]])
    assert ids(await lazy_store.query(cache_hit=False, run_id="r2")) == ids([recs[4]])
    assert await lazy_store.query(run_id="nope") == []
    assert ids(read_traces(lazy_store.path, class_name="dog")) == ids(tied)


async def test_query_chunks_gives_the_query_a_chunk_at_a_time(lazy_store: TraceStore) -> None:
    recs = [_rec(run_id="r1" if i % 3 else "r2", cache_hit=i % 2 == 0, started_at=float(i),
                 request={"prompt": f"{i}. A photo of the class red fox, number {i}."}) for i in range(11)]
    for r in recs:
        lazy_store.add(r)  # not flushed yet: query_chunks flushes first, as query does
    chunks = [chunk async for chunk in lazy_store.query_chunks(run_id="r1", cache_hit=False, size=2)]
    assert [len(c) for c in chunks] == [2, 1]  # i = 1, 5, 7
    assert [r for c in chunks for r in c] == await lazy_store.query(run_id="r1", cache_hit=False)
    assert [r for c in chunks for r in c][0].request == recs[1].request  # decoded, not packed


async def test_annotate_buffered_and_stored_records(lazy_store: TraceStore) -> None:
    a, b = _rec(started_at=1.0), _rec(started_at=2.0)
    lazy_store.add(a)
    await lazy_store.flush()
    lazy_store.add(b)
    await lazy_store.annotate(a.call_id, parse_dropped=4, cost_usd=0.01)  # already on disk
    await lazy_store.annotate(b.call_id, parse_dropped=0)  # still buffered
    got = {r.call_id: r for r in await lazy_store.query()}
    assert (got[a.call_id].parse_dropped, got[a.call_id].cost_usd) == (4, 0.01)
    assert got[b.call_id].parse_dropped == 0
    assert got[a.call_id].response_text == a.response_text  # other fields untouched
    with pytest.raises(KeyError):
        await lazy_store.annotate("f" * 32, parse_dropped=1)
    with pytest.raises(ValueError, match="unknown field"):
        await lazy_store.annotate(a.call_id, colour="red")
    with pytest.raises(ValueError, match="data: URI"):
        await lazy_store.annotate(a.call_id, request={"u": "data:image/png;base64,AA"})
    with pytest.raises(TypeError):  # call_id is the record's identity, never a field to change
        await lazy_store.annotate(b.call_id, call_id="x")  # type: ignore[misc]


async def test_many_coroutines_adding_and_querying(tmp_path: Path) -> None:
    async with await TraceStore.open(tmp_path / "t.sqlite", batch_size=16, flush_interval_s=0.01) as store:

        async def worker(w: int) -> None:
            for i in range(10):
                store.add(_rec(class_name=f"c{w}", round=i))
                if i % 5 == 4:
                    assert len(await store.query(class_name=f"c{w}")) == i + 1
                await asyncio.sleep(0)

        await asyncio.gather(*(worker(w) for w in range(50)))
    assert len(read_traces(tmp_path / "t.sqlite")) == 500


def test_read_traces_errors_are_one_clear_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sqlite"
    with pytest.raises(TraceStoreError, match="no trace file there"):
        read_traces(missing)
    assert not missing.exists()  # read-only: nothing created
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(TraceStoreError, match="not a readable trace file"):
        read_traces(junk)


async def test_unknown_filter_is_rejected(lazy_store: TraceStore) -> None:
    with pytest.raises(TraceStoreError, match="cannot filter on colour"):
        read_traces(lazy_store.path, colour="red")


async def test_bad_open_arguments(tmp_path: Path) -> None:
    with pytest.raises(TraceStoreError, match="batch_size"):
        await TraceStore.open(tmp_path / "t.sqlite", batch_size=0)


async def test_iter_traces_streams_what_read_traces_returns_and_read_costs_sums_recorded_prices(
        tmp_path: Path) -> None:
    store = await TraceStore.open(tmp_path / "traces.sqlite")
    recs = [_rec(class_name=c, cost_usd=cost, started_at=float(i),
                 request={"prompt": f"{i}. A photo of the class {c}, seen from the left side."})
            for i, (c, cost) in enumerate([("cat", 0.5), ("cat", None), ("dog", 0.25), ("dog", 0.125), ("owl", None)])]
    for r in recs:
        store.add(r)
    await store.close()
    path = tmp_path / "traces.sqlite"
    assert list(iter_traces(path, chunk=2)) == read_traces(path) == recs
    assert [r.call_id for r in iter_traces(path, unpriced=True, chunk=1)] == [recs[1].call_id, recs[4].call_id]
    assert read_costs(path) == {"cat": 0.5, "dog": 0.375}  # owl has no recorded price: priced by the reader
    assert read_costs(path, class_name="dog") == {"dog": 0.375}
