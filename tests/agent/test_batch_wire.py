"""Pure parts of batch mode: output lines read by the one retry policy's rules, the line index, batch prices,
progress counts (the modules' worked examples run as doctests with the suite)."""

from __future__ import annotations

import base64
import io
import json

import pytest

from agent.batch.wire import index_lines, input_line, line_outcome
from agent.readout.cost import PricesError, parse_prices
from store.traces import TraceRecord

CHAT = {"id": "c", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


def line(status: int | None, body: object = None, error: dict | None = None) -> dict:
    response = None if status is None else {"status_code": status, "request_id": "r", "body": body}
    return {"id": "batch_req_1", "custom_id": "k", "response": response, "error": error}


def test_answer_lines_become_what_the_sync_transport_returns() -> None:
    assert line_outcome("llm", line(200, CHAT)).value == {"text": "hi", "finish_reason": "stop", "input_tokens": 3,
                                                          "output_tokens": 1}
    png = base64.b64encode(b"\x89PNG...").decode()
    image = line_outcome("t2i", line(200, {"created": 1, "data": [{"b64_json": png}]})).value
    assert image is not None and image["b64"] == png


@pytest.mark.parametrize(("given", "kind", "retryable"), [
    (line(500, {"error": {"message": "boom", "code": "server_error"}}), "server", True),
    (line(429, {"error": {"message": "slow down", "code": "rate_limit_exceeded"}}), "rate_limited", True),
    (line(429, {"error": {"message": "no money", "code": "insufficient_quota"}}), "quota", False),
    (line(400, {"error": {"message": "rejected", "code": "content_policy_violation"}}), "refused", False),
    (line(400, {"error": {"message": "bad n", "code": None}}), "bad_request", False),
    (line(None, None, {"code": "batch_expired", "message": "not run in time"}), "server", True),
    (line(200, {"choices": []}), "bad_response", True),
    (line(200, {**CHAT, "choices": [{**CHAT["choices"][0], "finish_reason": "content_filter"}]}), "refused", False),
    ({"custom_id": "k"}, "bad_response", True),
])
def test_failed_lines_are_classified_like_synchronous_failures(given: dict, kind: str, retryable: bool) -> None:
    failure = line_outcome("llm", given).failure
    assert failure is not None and (failure.kind, failure.retryable) == (kind, retryable)


def test_the_index_points_at_each_line() -> None:
    data = input_line("a", "/v1/x", {"p": "é"}) + b"not json\n" + json.dumps(line(200, CHAT)).encode() + b"\n"
    index = list(index_lines(io.BytesIO(data)))
    assert [(k, ok) for k, ok, _, _ in index] == [("a", False), ("k", True)]
    for key, _, offset, length in index:
        assert json.loads(data[offset:offset + length])["custom_id"] == key


def test_batch_prices_default_to_half_and_can_be_set_per_model() -> None:
    table = parse_prices({"models": {"m": {"input_per_1m": 2.0}, "n": {"input_per_1m": 2.0, "batch_factor": 0.4}}},
                         "t.toml")
    row = TraceRecord(run_id="r", class_name="c", node="n", role="llm", operation="chat", model="m",
                      input_tokens=1_000_000, meta={"transport": "batch"})
    assert table.record_cost(row) == 1.0
    row.model = "n"
    assert table.record_cost(row) == 0.8
    row.meta = {"transport": "sync", "batch_fallback": True}
    assert table.record_cost(row) == 2.0
    with pytest.raises(PricesError, match="batch_factor: must be a share"):
        parse_prices({"models": {"m": {"batch_factor": 2}}}, "t.toml")


def test_progress_counts_calls_waiting_in_batches() -> None:
    from agent.readout.progress import Progress

    stream = io.StringIO()
    progress = Progress(mode="log_json", stream=stream)
    progress.batches("t2i", {"queued": 3, "waiting": 0, "batches": 0})
    progress.batches("t2i", {"queued": 5, "waiting": 0, "batches": 0})  # same number of live batches: no event
    progress.batches("t2i", {"queued": 0, "waiting": 5, "batches": 1})
    progress.batches("llm", {"queued": 2, "waiting": 0, "batches": 0})
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["event"], e["role"], e["batches"]) for e in events] == [
        ("batches", "t2i", 0), ("batches", "t2i", 1), ("batches", "llm", 0)]
    assert progress.waiting_in_batches() == 7
    assert progress.snapshot()["batches"]["t2i"] == {"queued": 0, "waiting": 5, "batches": 1}
