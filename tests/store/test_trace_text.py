"""Trace text stored once: the packed encoding round-trips every string, and the store gives back exactly
what was added (request dict and reply string) from packed, inline and colliding rows alike."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

import store.trace_text as trace_text
from store.trace_text import ids_of, pack_json, pack_text, token, tokens_in, unpack_json, unpack_text
from store.traces import TraceRecord, TraceStore, TraceStoreError, read_counts, read_traces

LINE = "A photo of the class red fox, with a bushy tail in a snowy field."
AWKWARD = [
    "", "~", "~~", "~@", "~=", "@", "=", "~@AAAAAAAAAAA", "~=x\n@AAAAAAAAAAA", "~~@AAAAAAAAAAA",
    "@" + "A" * 11, "1. ", "- ", "1.", "12) ", "\n", "\n\n", "\r\n", LINE + "\n", LINE + "\r\n", "\r\n" + LINE,
    f"1. {LINE}\n2. {LINE}\n", f"- {LINE}\r\n- {LINE}\r\n", f"~{LINE}", f"~@{LINE}", f"1. ~{LINE}",
    "Füchse im Schnee — ein Foto der Klasse 赤狐, mit 🦊 buschigem Schwanz.\n3. " + "ü" * 30,
    "x" * 19, "x" * 20, '"~~x"', "~x", "  3. " + LINE, "3.  " + LINE, "3." + LINE, f"{LINE}\n=\n@\n~", LINE * 40,
]
# Lone surrogates (json.loads makes them from "\\ud83e"): they pack, though SQLite cannot store them.
SURROGATES = "\ud83e\udd8a is a fox, twice over " * 3


@pytest.mark.parametrize("text", [*AWKWARD, SURROGATES])
def test_pack_then_unpack_is_the_same_string(text: str) -> None:
    segments: trace_text.Segments = {}
    packed = pack_text(text, segments)
    bodies = {token(h): body for h, (_, body) in segments.items()}
    assert unpack_text(packed, bodies) == text
    assert set(segments) <= set(ids_of(tokens_in(packed)))  # the reader's scan finds every reference
    assert set(segments) <= set(ids_of(tokens_in(json.dumps({"t": packed}, ensure_ascii=False))))
    if not segments:  # nothing long enough to share: the text itself (escaped when it starts with ~)
        assert packed == ("~" + text if text.startswith("~") else text)


def test_a_reply_line_and_the_prompt_made_of_it_share_one_segment() -> None:
    reply_segments: trace_text.Segments = {}
    prompt_segments: trace_text.Segments = {}
    pack_text(f"1. {LINE}\n2. A photo of the class red fox, asleep under a hedge.", reply_segments)
    pack_json(json.dumps({"prompt": LINE, "n": 1}), prompt_segments)
    assert set(prompt_segments) < set(reply_segments)


def test_requests_round_trip_at_any_depth() -> None:
    request = {"messages": [{"role": "user", "content": [{"type": "text", "text": f"1. {LINE}\n2. {LINE}"},
                                                         {"image_url": {"sha256": "ab" * 32}}]}],
               "model": "~@AAAAAAAAAAA", "n": 2, "t": 0.5, "ok": True, "none": None, "list": [LINE, "", [LINE]]}
    text = json.dumps(request, sort_keys=True, ensure_ascii=False)
    segments: trace_text.Segments = {}
    packed = pack_json(text, segments)
    assert len(packed) < len(text) and len(segments) == 2  # LINE and the image hash, each once
    assert unpack_json(packed, {token(h): b for h, (_, b) in segments.items()}) == text  # the very JSON text


def test_a_missing_segment_is_an_error_never_other_text() -> None:
    packed = pack_text(LINE, {})
    with pytest.raises(trace_text.SegmentError, match="missing"):
        unpack_text(packed, {})
    with pytest.raises(trace_text.SegmentError, match="malformed"):
        unpack_text("~#what", {})


def _rec(i: int, request: dict[str, Any], response: str | None) -> TraceRecord:
    return TraceRecord(run_id="r1", class_name="red fox", node="extend", role="llm", operation="chat",
                       model="m", request=request, response_text=response, started_at=float(i), attempts=1,
                       input_tokens=10, output_tokens=5, cost_usd=0.001)


def _records() -> list[TraceRecord]:
    out = []
    for i, text in enumerate(AWKWARD):
        out.append(_rec(i, {"messages": [{"role": "user", "content": text}], "prompt": text,
                            "deep": [{"x": [text, LINE]}], "n": i}, text))
    out.append(_rec(len(out), {}, None))
    return out


def _canonical(record: TraceRecord) -> dict[str, Any]:
    return json.loads(json.dumps(record.request, sort_keys=True, ensure_ascii=False))


def _stored(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


async def test_every_reader_gets_back_exactly_what_was_added(tmp_path: Path) -> None:
    path = tmp_path / "traces.sqlite"
    records = _records()
    async with await TraceStore.open(path, batch_size=7, flush_interval_s=60) as store:
        for record in records:
            store.add(record)
        await store.flush()
        queried = await store.query(run_id="r1")
        got = [await store.get(r.call_id) for r in records]
    for back in (queried, got, read_traces(path), read_traces(path, class_name="red fox")):
        assert [r.call_id for r in back if r] == [r.call_id for r in records]
        for original, read in zip(records, back, strict=True):
            assert read is not None
            assert read.request == _canonical(original)
            assert read.response_text == original.response_text  # the same string, byte for byte
            assert type(read.response_text) is type(original.response_text)
    encodings = {e for (e,) in _stored(path, "SELECT encoding FROM traces")}
    assert encodings == {1}  # no collision here: every row packed
    (segments,) = _stored(path, "SELECT COUNT(*) FROM segments")
    assert 0 < segments[0] < 40  # LINE and a few long awkward texts, each once
    assert _stored(path, "PRAGMA user_version") == [(1,)]


async def test_packed_rows_are_small_and_the_aggregates_need_no_decoding(tmp_path: Path) -> None:
    path = tmp_path / "traces.sqlite"
    reply = "\n".join(f"{i}. A photo of the class red fox, variant number {i} of many." for i in range(10))
    async with await TraceStore.open(path, batch_size=5, flush_interval_s=60) as store:
        for i in range(50):
            store.add(_rec(i, {"messages": [{"role": "user", "content": "List these again:\n" + reply}]}, reply))
        await store.flush()
        counts = await store.counts("r1")
    (text_bytes,) = _stored(path, "SELECT SUM(LENGTH(request) + LENGTH(response_text)) FROM traces")
    assert text_bytes[0] / 50 < 400  # inline: ~1400 bytes of text per row
    assert counts["red fox"]["llm"]["calls"] == 50
    assert read_counts(path, run_id="r1") == counts


async def test_a_colliding_segment_id_keeps_the_row_inline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            request: pytest.FixtureRequest) -> None:
    # 16 possible ids: different lines collide all the time, and each row must still read back its own text.
    real = trace_text.segment_id
    monkeypatch.setattr(trace_text, "segment_id", lambda body: (real(body)[0] % 16, real(body)[1]))
    trace_text._reference.cache_clear()  # lines hashed by earlier tests hold their real ids
    request.addfinalizer(trace_text._reference.cache_clear)
    path = tmp_path / "traces.sqlite"
    lines = [f"A photo of the class red fox, variant {i:03d} in a field." for i in range(60)]
    records = [_rec(i, {"prompt": lines[i]}, f"1. {lines[i]}\n2. {lines[(i + 1) % 60]}") for i in range(60)]
    async with await TraceStore.open(path, batch_size=9, flush_interval_s=60) as store:
        for record in records[:30]:
            store.add(record)
        await store.flush()
        for record in records[30:]:  # the second half meets ids already in the file and in the memory
            store.add(record)
    async with await TraceStore.open(path) as store:  # a fresh process: an empty memory, ids in the file
        store.add(_rec(99, {"prompt": lines[59] + "!"}, lines[3]))
    back = {r.call_id: r for r in read_traces(path)}
    for record in records:
        assert back[record.call_id].request == record.request
        assert back[record.call_id].response_text == record.response_text
    assert next(r for r in back.values() if r.started_at == 99).request == {"prompt": lines[59] + "!"}
    encodings = [e for (e,) in _stored(path, "SELECT encoding FROM traces")]
    assert 0 in encodings and 1 in encodings  # some rows packed, the colliding ones inline


async def test_annotate_a_packed_row(tmp_path: Path) -> None:
    path = tmp_path / "traces.sqlite"
    record = _rec(0, {"prompt": LINE}, f"1. {LINE}")
    async with await TraceStore.open(path, batch_size=100, flush_interval_s=60) as store:
        store.add(record)
        await store.flush()
        await store.annotate(record.call_id, parse_dropped=2)
        assert (await store.get(record.call_id)).request == {"prompt": LINE}  # type: ignore[union-attr]
        await store.annotate(record.call_id, response_text=f"2. {LINE}")
    (read,) = read_traces(path)
    assert (read.parse_dropped, read.request, read.response_text) == (2, {"prompt": LINE}, f"2. {LINE}")
    assert _stored(path, "SELECT encoding FROM traces") == [(0,)]  # rewritten text goes inline


async def test_a_damaged_or_newer_file_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "traces.sqlite"
    async with await TraceStore.open(path) as store:
        store.add(_rec(0, {"prompt": LINE}, None))
    with closing(sqlite3.connect(path)) as db:
        db.execute("DELETE FROM segments")
        db.commit()
    with pytest.raises(TraceStoreError, match="does not decode .*missing.*damaged") as info:
        read_traces(path)
    assert "\n" not in str(info.value)
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 9")
    with pytest.raises(TraceStoreError, match="format 9 is newer"):
        read_traces(path)
    with pytest.raises(TraceStoreError, match="format 9 is newer"):
        await TraceStore.open(path)


# The traces table before text was stored once and before queue_s, server_s and meta were added (the first
# release): every request and reply inline.
FIRST_SCHEMA = """
CREATE TABLE traces ("call_id" TEXT PRIMARY KEY, "run_id" TEXT, "class_name" TEXT, "node" TEXT,
  "round" INTEGER, "role" TEXT, "gen_ai.operation.name" TEXT, "gen_ai.request.model" TEXT, "request" TEXT,
  "response_text" TEXT, "gen_ai.response.finish_reasons" TEXT, "gen_ai.usage.input_tokens" INTEGER,
  "gen_ai.usage.output_tokens" INTEGER, "images" INTEGER, "latency_s" REAL, "cache_hit" INTEGER,
  "attempts" INTEGER, "status" TEXT, "error" TEXT, "error.type" TEXT, "parse_dropped" INTEGER,
  "cost_usd" REAL, "started_at" REAL);
"""


async def test_a_first_release_file_reads_then_takes_packed_rows(tmp_path: Path) -> None:
    path = tmp_path / "traces.sqlite"
    old = _records()
    with closing(sqlite3.connect(path)) as db:
        db.executescript(FIRST_SCHEMA)
        db.executemany("INSERT INTO traces VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
                       " ?, ?)",
                       [(r.call_id, r.run_id, r.class_name, r.node, r.round, r.role, r.operation, r.model,
                         json.dumps(r.request, sort_keys=True, ensure_ascii=False), r.response_text,
                         r.finish_reason, r.input_tokens, r.output_tokens, r.images, r.latency_s,
                         int(r.cache_hit), r.attempts, r.status, r.error, r.error_kind, r.parse_dropped,
                         r.cost_usd, r.started_at) for r in old])
        db.commit()
    before = read_traces(path)  # read-only: the file is not migrated by reading
    assert [(r.request, r.response_text) for r in before] == [(_canonical(r), r.response_text) for r in old]
    assert "encoding" not in {c for (_, c, *_) in _stored(path, "PRAGMA table_info(traces)")}
    counts = read_counts(path)
    new = [_rec(100 + i, {"prompt": LINE, "i": i}, f"{i}. {LINE}") for i in range(5)]
    async with await TraceStore.open(path) as store:  # a resume into the old folder
        for record in new:
            store.add(record)
        assert [r.call_id for r in await store.query()] == [r.call_id for r in [*old, *new]]
    after = read_traces(path)
    assert [(r.request, r.response_text) for r in after] == \
        [(_canonical(r), r.response_text) for r in [*old, *new]]
    assert [(r.queue_s, r.meta) for r in after[:len(old)]] == [(0.0, {})] * len(old)
    stored = dict(_stored(path, "SELECT call_id, encoding FROM traces"))
    assert {stored[r.call_id] for r in old} == {0} and {stored[r.call_id] for r in new} == {1}
    assert read_counts(path)["red fox"]["llm"]["calls"] == counts["red fox"]["llm"]["calls"] + 5


QUOTED = ['say "~@AAAAAAAAAAA" then', 'ends in a backslash \\', '\\"~' + LINE, '"~' + LINE + '"', "\\\\", "\t~x\u2028y",
          f'1. "{LINE}"\n2. \\{LINE}\\']


def test_the_request_text_comes_back_byte_for_byte() -> None:
    for i, text in enumerate([*AWKWARD, *QUOTED]):
        request = {text[:30] or "k": text, "~" + text[:25]: [text, {"~@": text, "n": i}], "q": QUOTED}
        original = json.dumps(request, sort_keys=True, ensure_ascii=False)
        segments: trace_text.Segments = {}
        packed = pack_json(original, segments)
        bodies = {token(h): body for h, (_, body) in segments.items()}
        assert set(segments) <= set(ids_of(tokens_in(packed)))
        assert unpack_json(packed, bodies) == original, text
