"""The Batch API transport (agent/batch/transport.py) against the simulator: grouping, limits, failures and retries,
the sync fallback, admission, stop, and a later process taking over what an earlier one left.

Each "process" is a fresh BatchTransport over the same ledger file and results folder (what a restarted run
has); the simulator counts submissions per custom_id.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI

from agent.batch.client import BatchClient
from agent.batch.transport import BatchSettings, BatchTransport
from agent.providers.config import RoleConfig
from agent.providers.limiter import RoleLimiter
from agent.providers.retry import ProviderError
from agent.providers.transport import HttpTransport, Outbound, stopped_error
from scripts.sim.server import SimConfig, Simulator
from store.batches import BatchLedger
from store.traces import TraceRecord

FAST = BatchSettings(window_s=0.05, poll_s=0.02, poll_max_s=0.05)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimConfig(batch_validating_s=0.02, batch_in_progress_s=0.05, batch_finalizing_s=0.02)) as s:
        yield s


class Rig:
    """Builds transports ("processes") that share one ledger file and results folder."""

    def __init__(self, sim: Simulator, tmp: Path) -> None:
        self.sim, self.tmp = sim, tmp
        self.stop = False
        self.ledgers: list[BatchLedger] = []
        self.transports: list[BatchTransport] = []

    def cfg(self, role: str = "llm", **extra: Any) -> RoleConfig:
        return RoleConfig(base_url=self.sim.base_url, model=f"sim-{role}", max_attempts=3, backoff_initial_s=0.01,
                          backoff_max_s=0.05, timeout_s=10, **extra)

    async def transport(self, role: str = "llm", settings: BatchSettings = FAST, fallback: bool = False,
                        **extra: Any) -> BatchTransport:
        ledger = await BatchLedger.open(self.tmp / "batches.sqlite")
        self.ledgers.append(ledger)
        cfg = self.cfg(role, **extra)
        client = AsyncOpenAI(base_url=self.sim.base_url, api_key="k", max_retries=0, timeout=10)
        sync = HttpTransport(role, AsyncOpenAI(base_url=self.sim.base_url, api_key="k", max_retries=0),
                             RoleLimiter(8, 10_000), lambda: self.stop) if fallback else None
        transport = BatchTransport(role, BatchClient(client, cfg, role=role, run_id="r1"), ledger, settings,
                                   results_dir=self.tmp / "batches", stop_requested=lambda: self.stop,
                                   fallback=sync)
        self.transports.append(transport)
        return transport

    def admit(self, c: Outbound) -> None:
        """As the providers admit a call: refused once a stop was asked for."""
        if self.stop:
            raise stopped_error()

    async def close(self) -> None:
        for transport in self.transports:
            await transport.close()
        for ledger in self.ledgers:
            await ledger.close()


@pytest.fixture
async def rig(sim: Simulator, tmp_path: Path) -> AsyncIterator[Rig]:
    r = Rig(sim, tmp_path)
    yield r
    await r.close()


def call(rig: Rig, i: int, role: str = "llm", admit: Callable[[Outbound], None] | None = None,
         text: str | None = None, **body: Any) -> Outbound:
    cfg = rig.cfg(role)
    if role == "t2i":
        request: dict[str, Any] = {"model": cfg.model, "prompt": text or f"A photo of the class owl, with {i} in b.",
                                   "n": 1, **body}
        op = "image_generation"
    else:
        request = {"model": cfg.model, "messages": [{"role": "user", "content": text or f"say {i}"}], **body}
        op = "chat"
    row = TraceRecord(run_id="r1", class_name="c", node="n", role=role, operation=op, model=cfg.model,
                      request=request)
    return Outbound(role, request, f"key-{role}-{i}", row, cfg, admit or rig.admit)


def submitted(sim: Simulator) -> dict[str, int]:
    return dict(sim.stats()["batch"]["submitted"])


async def test_concurrent_calls_share_one_batch_and_get_their_own_answers(rig: Rig, sim: Simulator) -> None:
    transport = await rig.transport()
    calls = [call(rig, i) for i in range(5)]
    values = await asyncio.gather(*(transport.send(c) for c in calls))
    direct = AsyncOpenAI(base_url=sim.base_url, api_key="k", max_retries=0)
    for c, value in zip(calls, values, strict=True):  # the answer a synchronous request gets
        sync = await direct.chat.completions.create(**c.body)
        assert value["text"] == sync.choices[0].message.content and value["finish_reason"] == "stop"
        assert value["input_tokens"] and value["output_tokens"]
        meta = c.row.meta
        assert meta["transport"] == "batch" and meta["custom_id"] == c.key and meta["batch_id"].startswith("batch_")
        assert meta["batch_status"] == "completed" and {"created_at", "completed_at"} <= set(meta["batch_times"])
        assert c.row.attempts == 1 and c.admitted and c.row.server_s > 0
    await direct.close()
    assert len({c.row.meta["batch_id"] for c in calls}) == 1 and submitted(sim) == {c.key: 1 for c in calls}
    stats = sim.stats()
    assert stats["batch"]["batches"] == 1 and stats["total"] == 5  # the 5 sync requests above, none by the transport


async def test_input_file_lines_follow_the_published_request_shape(rig: Rig, sim: Simulator) -> None:
    transport = await rig.transport("t2i")
    c = call(rig, 1, "t2i")
    value = await transport.send(c)
    assert value["ext"] == "png" and value["data"][:4] == b"\x89PNG"  # decoded as the sync transport does
    direct = AsyncOpenAI(base_url=sim.base_url, api_key="k", max_retries=0)
    batch = await direct.batches.retrieve(c.row.meta["batch_id"])
    line = json.loads((await direct.files.content(batch.input_file_id)).text)
    assert line == {"custom_id": c.key, "method": "POST", "url": "/v1/images/generations", "body": c.body}
    assert batch.endpoint == "/v1/images/generations" and batch.completion_window == "24h"
    assert batch.metadata is not None and batch.metadata["ltgc_run"] == "r1" and batch.metadata["ltgc_role"] == "t2i"
    assert batch.metadata["ltgc_submission"] == c.row.meta["submission_id"]
    await direct.close()


async def test_a_batch_closes_at_max_requests_and_at_max_bytes(rig: Rig, sim: Simulator) -> None:
    by_count = await rig.transport(settings=BatchSettings(max_requests=2, window_s=30, poll_s=0.02, poll_max_s=0.05))
    calls = [call(rig, i) for i in range(4)]
    await asyncio.gather(*(by_count.send(c) for c in calls))  # a 30 s window: only the count can close them
    assert len({c.row.meta["batch_id"] for c in calls}) == 2
    one_line = len(json.dumps({"custom_id": "key-llm-10", "method": "POST", "url": "/v1/chat/completions",
                               "body": call(rig, 10).body}, separators=(",", ":"))) + 1
    by_size = await rig.transport(settings=BatchSettings(max_bytes=2 * one_line, window_s=30, poll_s=0.02,
                                                         poll_max_s=0.05))
    calls = [call(rig, 10 + i) for i in range(3)]
    sends = [asyncio.ensure_future(by_size.send(c)) for c in calls]
    await asyncio.sleep(0.3)
    assert sum(s.done() for s in sends) == 2  # the third line would pass max_bytes: it waits for its own batch
    by_size.settings = BatchSettings(window_s=0.01, poll_s=0.02, poll_max_s=0.05)
    by_size._flush()
    await asyncio.gather(*sends)
    assert max(submitted(sim).values()) == 1 and len({c.row.meta["batch_id"] for c in calls}) == 2


async def test_the_window_closes_a_lone_request(rig: Rig) -> None:
    transport = await rig.transport(settings=BatchSettings(window_s=0.2, poll_s=0.02, poll_max_s=0.05))
    c = call(rig, 1)
    started = asyncio.get_running_loop().time()
    await transport.send(c)
    assert 0.2 <= c.row.queue_s < asyncio.get_running_loop().time() - started


async def test_error_lines_and_unanswered_requests_go_into_the_next_batch(rig: Rig, sim: Simulator) -> None:
    transport = await rig.transport()
    sim.inject("batch_line_error", count=1)
    calls = [call(rig, i) for i in range(3)]
    await asyncio.gather(*(transport.send(c) for c in calls))
    assert sorted(c.row.attempts for c in calls) == [1, 1, 2]
    assert sorted(submitted(sim).values()) == [1, 1, 2]
    sim.inject("batch_expired")  # first half answered, the rest retried
    calls = [call(rig, 10 + i) for i in range(4)]
    await asyncio.gather(*(transport.send(c) for c in calls))
    assert sorted(c.row.attempts for c in calls) == [1, 1, 2, 2]
    sim.inject("batch_failed")  # nothing answered: all retried
    calls = [call(rig, 20 + i) for i in range(2)]
    await asyncio.gather(*(transport.send(c) for c in calls))
    assert [c.row.attempts for c in calls] == [2, 2] and all(submitted(sim)[c.key] == 2 for c in calls)


async def test_max_attempts_then_the_item_fails_and_final_lines_fail_at_once(rig: Rig, sim: Simulator) -> None:
    transport = await rig.transport()
    sim.set_config(rate_batch_line_error=1.0)
    c = call(rig, 1)
    with pytest.raises(ProviderError) as caught:
        await transport.send(c)
    assert caught.value.kind == "exhausted" and caught.value.attempts == 3 and submitted(sim)[c.key] == 3
    sim.set_config(rate_batch_line_error=0.0)
    bad = call(rig, 2, n=99)  # a 400 line: the request itself is wrong
    with pytest.raises(ProviderError) as caught:
        await transport.send(bad)
    assert caught.value.kind == "bad_request" and caught.value.attempts == 1 and submitted(sim)[bad.key] == 1


async def test_fallback_sync_sends_a_failed_batchs_leftovers_synchronously(rig: Rig, sim: Simulator) -> None:
    transport = await rig.transport(settings=BatchSettings(window_s=0.05, poll_s=0.02, poll_max_s=0.05,
                                                           fallback="sync"), fallback=True)
    sim.inject("batch_failed")
    calls = [call(rig, i) for i in range(3)]
    values = await asyncio.gather(*(transport.send(c) for c in calls))
    assert all(v["text"] for v in values) and sim.stats()["requests"]["chat"] == 3
    assert all(c.row.meta["transport"] == "sync" and c.row.meta["batch_fallback"] for c in calls)
    assert [c.row.attempts for c in calls] == [2, 2, 2]  # one batch, then one synchronous request


async def test_a_refused_call_is_left_out_of_the_batch(rig: Rig, sim: Simulator) -> None:
    transport = await rig.transport()

    def refuse(c: Outbound) -> None:
        raise ProviderError("budget", "--max-cost reached", attempts=0)

    ok, refused = call(rig, 1), call(rig, 2, admit=refuse)
    results = await asyncio.gather(transport.send(ok), transport.send(refused), return_exceptions=True)
    assert isinstance(results[1], ProviderError) and results[1].kind == "budget" and results[1].attempts == 0
    assert submitted(sim) == {ok.key: 1}


async def test_stop_leaves_the_batch_running_and_a_later_process_collects_it(rig: Rig, sim: Simulator) -> None:
    sim.set_config(batch_in_progress_s=1.0)
    first = await rig.transport()
    calls = [call(rig, i) for i in range(3)]
    sends = [asyncio.ensure_future(first.send(c)) for c in calls]
    while sim.stats()["batch"]["by_status"].get("in_progress") != 1:
        await asyncio.sleep(0.01)
    queued = asyncio.ensure_future(first.send(call(rig, 9)))  # in the queue when the stop comes: never sent
    rig.stop = True
    results = await asyncio.gather(*sends, queued, return_exceptions=True)
    assert all(isinstance(r, ProviderError) and r.kind == "stopped" for r in results)
    assert [r.attempts for r in results if isinstance(r, ProviderError)] == [1, 1, 1, 0]
    assert sim.stats()["batch"]["by_status"] == {"in_progress": 1}  # still running server-side
    rig.stop = False
    later = await rig.transport()  # a resumed run: same ledger, a new transport
    again = [call(rig, i) for i in range(3)]
    values = await asyncio.gather(*(later.send(c) for c in again))
    assert all(v["text"] for v in values) and submitted(sim) == {c.key: 1 for c in calls}
    assert {c.row.meta["batch_id"] for c in again} == {calls[0].row.meta["batch_id"]}


async def test_a_collected_answer_is_read_from_disk_without_the_server(rig: Rig, sim: Simulator) -> None:
    first = await rig.transport()
    c = call(rig, 1)
    value = await first.send(c)
    later = await rig.transport()
    sim.set_config(batch_validating_s=60)  # a new batch would not answer within the test
    again = call(rig, 1)
    assert await later.send(again) == value and submitted(sim) == {c.key: 1}
    assert sim.stats()["batch"]["requests"].get("GET files", 0) == 1  # downloaded once, by the first process


async def test_an_unresolved_submission_is_settled_by_its_metadata(rig: Rig, sim: Simulator) -> None:
    """A process killed after batches.create and before recording the batch id: the next one finds the batch
    by its submission id and waits for it; one killed before create: the next one submits afresh."""
    ledger = await BatchLedger.open(rig.tmp / "batches.sqlite")
    rig.ledgers.append(ledger)
    direct = AsyncOpenAI(base_url=sim.base_url, api_key="k", max_retries=0)
    made, lost = call(rig, 1), call(rig, 2)
    await ledger.intent("sub-made", run_id="r1", role="llm", endpoint="/v1/chat/completions", custom_ids=[made.key])
    await ledger.intent("sub-lost", run_id="r1", role="llm", endpoint="/v1/chat/completions", custom_ids=[lost.key])
    line = (json.dumps({"custom_id": made.key, "method": "POST", "url": "/v1/chat/completions",
                        "body": made.body}) + "\n").encode()
    file = await direct.files.create(file=("x.jsonl", line), purpose="batch")
    await ledger.uploaded("sub-made", file.id)
    await direct.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h",
                                metadata={"ltgc_run": "r1", "ltgc_submission": "sub-made", "ltgc_role": "llm"})
    await direct.close()
    later = await rig.transport()
    await asyncio.gather(later.send(made), later.send(lost))
    assert submitted(sim) == {made.key: 1, lost.key: 1}
    states = {s.submission_id: s.state for s in await ledger.submissions()}
    assert states["sub-made"] == "collected" and states["sub-lost"] == "void"
    assert made.row.meta["submission_id"] == "sub-made" and lost.row.meta["submission_id"] != "sub-lost"
