"""The simulator's Batch API (scripts/sim/batch.py): objects valid against OpenAI's published shapes, the
lifecycle with its delays, the fault knobs, listing by metadata, cancel, and submissions counted per custom_id.

All traffic goes through the real openai SDK to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI
from openai.types import Batch, FileObject

from scripts.sim.server import SimConfig, Simulator

# Transcribed from OpenAI's published OpenAPI spec (github.com/openai/openai-openapi, openapi.json at commit
# f85dbe2: components.schemas OpenAIFile, Batch, BatchRequestCounts, BatchError, ListBatchesResponse; the
# per-line BatchRequestOutput from openapi.yaml at e1cb7a8^). Only what a client reads is kept. Optional
# fields may be null: the spec's own examples and the real API send null for unset ones.
INT, STR, OBJ, BOOL, ARR = "integer", "string", "object", "boolean", "array"
FILE_SHAPE = {
    "required": ["id", "object", "bytes", "created_at", "filename", "purpose", "status"],
    "properties": {"id": STR, "object": (STR, ["file"]), "bytes": INT, "created_at": INT, "expires_at": INT,
                   "filename": STR, "status": (STR, ["uploaded", "processed", "error"]), "status_details": STR,
                   "purpose": (STR, ["assistants", "assistants_output", "batch", "batch_output", "fine-tune",
                                     "fine-tune-results", "vision", "user_data"])},
}
BATCH_SHAPE = {
    "required": ["id", "object", "endpoint", "input_file_id", "completion_window", "status", "created_at"],
    "properties": {
        "id": STR, "object": (STR, ["batch"]), "endpoint": STR, "model": STR, "errors": OBJ, "input_file_id": STR,
        "completion_window": STR, "output_file_id": STR, "error_file_id": STR, "request_counts": OBJ,
        "status": (STR, ["validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling",
                         "cancelled"]),
        **{name: INT for name in ("created_at", "in_progress_at", "expires_at", "finalizing_at", "completed_at",
                                  "failed_at", "expired_at", "cancelling_at", "cancelled_at")},
        "usage": OBJ, "metadata": OBJ,
    },
}
COUNTS_SHAPE = {"required": ["total", "completed", "failed"], "properties": {"total": INT, "completed": INT,
                                                                             "failed": INT}}
ERROR_SHAPE = {"required": [], "properties": {"code": STR, "message": STR, "param": STR, "line": INT}}
LIST_SHAPE = {"required": ["object", "data", "has_more"],
              "properties": {"object": (STR, ["list"]), "data": ARR, "first_id": STR, "last_id": STR, "has_more": BOOL}}
OUTPUT_LINE_SHAPE = {"required": [], "properties": {"id": STR, "custom_id": STR, "response": OBJ, "error": OBJ}}
_PY = {INT: int, STR: str, OBJ: dict, BOOL: bool, ARR: list}


def check_shape(obj: dict[str, Any], shape: dict[str, Any], where: str) -> None:
    """``obj`` has every required field (non-null), no field outside the shape, and each field's type/enum."""
    assert isinstance(obj, dict), where
    for name in shape["required"]:
        assert obj.get(name) is not None, f"{where}: required {name} missing"
    for name, value in obj.items():
        assert name in shape["properties"], f"{where}: {name} is not in the published shape"
        if value is None:
            assert name not in shape["required"], f"{where}: {name} is null"
            continue
        spec = shape["properties"][name]
        kind, enum = spec if isinstance(spec, tuple) else (spec, None)
        assert isinstance(value, _PY[kind]) and not (kind == INT and isinstance(value, bool)), (where, name, value)
        assert enum is None or value in enum, (where, name, value)


def check_batch(obj: dict[str, Any]) -> None:
    check_shape(obj, BATCH_SHAPE, "Batch")
    check_shape(obj["request_counts"], COUNTS_SHAPE, "BatchRequestCounts")
    for error in (obj["errors"] or {}).get("data", []):
        check_shape(error, ERROR_SHAPE, "BatchError")
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in (obj["metadata"] or {}).items())
    Batch.model_validate(obj)  # and the SDK reads it


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimConfig(batch_validating_s=0.05, batch_in_progress_s=0.1, batch_finalizing_s=0.05)) as s:
        yield s




def chat_line(custom_id: str, text: str = "hello there", **extra: Any) -> dict[str, Any]:
    body = {"model": "sim-chat", "messages": [{"role": "user", "content": text}], **extra}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


async def submit(client: AsyncOpenAI, lines: list[dict[str, Any]], endpoint: str = "/v1/chat/completions",
                 metadata: dict[str, str] | None = None) -> Batch:
    file = await client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    return await client.batches.create(input_file_id=file.id, endpoint=endpoint,  # type: ignore[arg-type]
                                       completion_window="24h", metadata=metadata)


async def raw_batch(sim: Simulator, batch_id: str) -> dict[str, Any]:
    """The batch as JSON, before the SDK reads it (a plain connection per call: no TLS set-up to wait for)."""
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10)
    try:
        conn.request("GET", f"/v1/batches/{batch_id}")
        return dict(json.loads(conn.getresponse().read()))
    finally:
        conn.close()


async def until_final(client: AsyncOpenAI, batch_id: str, timeout: float = 10.0) -> Batch:
    deadline = time.monotonic() + timeout
    while True:
        batch = await client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        assert time.monotonic() < deadline, batch.status
        await asyncio.sleep(0.02)


async def lines_of(client: AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    text = (await client.files.content(file_id)).text
    return [json.loads(line) for line in text.splitlines()]


async def test_file_and_batch_objects_match_the_published_shapes(client: AsyncOpenAI, sim: Simulator) -> None:
    file = await client.files.create(file=("in.jsonl", jsonl([chat_line("a"), chat_line("b")])), purpose="batch")
    async with openai.DefaultAsyncHttpxClient() as web:
        got = (await web.get(f"{sim.base_url}/files/{file.id}")).json()
    check_shape(got, FILE_SHAPE, "OpenAIFile")
    FileObject.model_validate(got)
    assert got["bytes"] == len(jsonl([chat_line("a"), chat_line("b")])) and got["purpose"] == "batch"
    assert (await client.files.content(file.id)).content == jsonl([chat_line("a"), chat_line("b")])
    batch = await client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions",
                                        completion_window="24h", metadata={"run": "r1"})
    seen = set()
    deadline = time.monotonic() + 5
    while "completed" not in seen and time.monotonic() < deadline:
        obj = await raw_batch(sim, batch.id)
        check_batch(obj)  # every status along the way
        seen.add(obj["status"])
        await asyncio.sleep(0.01)
    assert seen >= {"validating", "in_progress", "finalizing", "completed"}, seen
    assert obj["output_file_id"] and obj["error_file_id"] is None and obj["failed_at"] is None
    assert obj["created_at"] <= obj["in_progress_at"] <= obj["finalizing_at"] <= obj["completed_at"]
    assert obj["request_counts"] == {"total": 2, "completed": 2, "failed": 0} and obj["metadata"] == {"run": "r1"}
    for line in await lines_of(client, obj["output_file_id"]):
        check_shape(line, OUTPUT_LINE_SHAPE, "BatchRequestOutput")
        assert line["error"] is None and line["response"]["status_code"] == 200 and line["response"]["request_id"]
    async with openai.DefaultAsyncHttpxClient() as web:
        listing = (await web.get(f"{sim.base_url}/batches", params={"limit": 5})).json()
    check_shape(listing, LIST_SHAPE, "ListBatchesResponse")
    for item in listing["data"]:
        check_batch(item)


async def test_lifecycle_follows_the_configured_delays(client: AsyncOpenAI, sim: Simulator) -> None:
    sim.set_config(batch_validating_s=0.3, batch_in_progress_s=0.3, batch_finalizing_s=0.3)
    batch = await submit(client, [chat_line("a")])
    started = time.monotonic()
    statuses = []
    while time.monotonic() - started < 1.2:
        statuses.append((time.monotonic() - started, (await client.batches.retrieve(batch.id)).status))
        await asyncio.sleep(0.05)
    for at, status in statuses:  # each status only inside its window (with 0.1 s of slack for the clock)
        expect = ["validating", "in_progress", "finalizing", "completed"][min(3, int(at / 0.3))]
        if abs(at / 0.3 - round(at / 0.3)) > 0.35:
            assert status == expect, statuses
    assert statuses[-1][1] == "completed"


async def test_batch_answers_equal_the_synchronous_answers(client: AsyncOpenAI, sim: Simulator) -> None:
    line = chat_line("a", "Please use Template 2 to summarize the most distinctive features of class owl.")
    image = {"custom_id": "i", "method": "POST", "url": "/v1/images/generations",
             "body": {"model": "sim-image", "prompt": "A photo of the class owl, with a in b.", "n": 1}}
    chat = await until_final(client, (await submit(client, [line])).id)
    images = await until_final(client, (await submit(client, [image], endpoint="/v1/images/generations")).id)
    got_chat = (await lines_of(client, chat.output_file_id))[0]["response"]["body"]
    got_image = (await lines_of(client, images.output_file_id))[0]["response"]["body"]
    sync_chat = await client.chat.completions.create(**line["body"])
    sync_image = await client.images.generate(**image["body"])
    assert got_chat["choices"][0]["message"]["content"] == sync_chat.choices[0].message.content
    assert got_image["data"][0]["b64_json"] == sync_image.data[0].b64_json
    assert sim.stats()["batch"]["submitted"] == {"a": 1, "i": 1}


async def test_failed_expired_and_line_error_faults(client: AsyncOpenAI, sim: Simulator) -> None:
    sim.inject("batch_failed")
    failed = await until_final(client, (await submit(client, [chat_line("f1"), chat_line("f2")])).id)
    assert failed.status == "failed" and failed.output_file_id is None and failed.errors and failed.failed_at
    check_batch(await raw_batch(sim, failed.id))
    sim.inject("batch_expired")
    expired = await until_final(client, (await submit(client, [chat_line(f"e{i}") for i in range(4)])).id)
    out, err = await lines_of(client, expired.output_file_id), await lines_of(client, expired.error_file_id)
    assert expired.status == "expired" and expired.expired_at and [x["custom_id"] for x in out] == ["e0", "e1"]
    assert [(x["custom_id"], x["error"]["code"], x["response"]) for x in err] == [
        ("e2", "batch_expired", None), ("e3", "batch_expired", None)]
    sim.inject("batch_line_error", count=2)
    mixed = await until_final(client, (await submit(client, [chat_line(f"m{i}") for i in range(3)])).id)
    err = await lines_of(client, mixed.error_file_id)
    assert mixed.status == "completed" and mixed.request_counts.failed == 2 and mixed.request_counts.completed == 1
    assert [x["response"]["status_code"] for x in err] == [500, 500] and all(x["error"] is None for x in err)
    for line in err:
        check_shape(line, OUTPUT_LINE_SHAPE, "BatchRequestOutput")


async def test_rate_knob_and_bad_lines(client: AsyncOpenAI, sim: Simulator) -> None:
    sim.set_config(rate_batch_line_error=1.0)
    all_bad = await until_final(client, (await submit(client, [chat_line("r0"), chat_line("r1")])).id)
    assert all_bad.request_counts.failed == 2 and all_bad.output_file_id is None
    sim.set_config(rate_batch_line_error=0.0)
    bad_body = await until_final(client, (await submit(client, [chat_line("b0", n=99)])).id)
    assert (await lines_of(client, bad_body.error_file_id))[0]["response"]["status_code"] == 400
    duplicate = await until_final(client, (await submit(client, [chat_line("d"), chat_line("d")])).id)
    assert duplicate.status == "failed" and duplicate.errors.data[0].code == "duplicate_custom_id"


async def test_list_pages_newest_first_with_metadata_and_cancel(client: AsyncOpenAI, sim: Simulator) -> None:
    sim.set_config(batch_in_progress_s=30)
    made = [await submit(client, [chat_line(f"c{i}")], metadata={"ltgc_submission": f"s{i}"}) for i in range(5)]
    page = await client.batches.list(limit=2)
    assert [b.id for b in page.data] == [made[4].id, made[3].id] and page.has_more
    everything = [b async for b in client.batches.list(limit=2)]
    assert [b.metadata["ltgc_submission"] for b in everything] == ["s4", "s3", "s2", "s1", "s0"]
    await asyncio.sleep(0.1)
    cancelling = await client.batches.cancel(made[0].id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    cancelled = await until_final(client, made[0].id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at and cancelled.output_file_id is None
    check_batch(await raw_batch(sim, made[0].id))
    stats = sim.stats()["batch"]
    assert stats["submitted"] == {f"c{i}": 1 for i in range(5)} and stats["by_status"]["in_progress"] == 4


def test_bad_requests_are_openai_shaped_errors(sim: Simulator) -> None:
    async def go() -> None:
        async with AsyncOpenAI(base_url=sim.base_url, api_key="k", max_retries=0) as c:
            with pytest.raises(openai.NotFoundError):
                await c.batches.retrieve("batch_nope")
            with pytest.raises(openai.BadRequestError, match="endpoint"):
                await c.batches.create(input_file_id="f", endpoint="/v1/embeddings", completion_window="24h")
            with pytest.raises(openai.NotFoundError):
                await c.batches.create(input_file_id="file-x", endpoint="/v1/chat/completions", completion_window="24h")
            with pytest.raises(openai.BadRequestError, match="purpose"):
                await c.files.create(file=("a.txt", b"x"), purpose="assistants")

    asyncio.run(go())
    assert sim.stats()["total"] == 0  # Batch API requests are counted apart from the synchronous ones
