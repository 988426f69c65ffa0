"""agent/providers/client.py against the real loopback simulator (no HTTP mocks): happy paths, retries,
final failures, limits measured at the server, the cache, and the API key never reaching disk."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import agent.providers.client as providers_module
from agent.lifecycle.budget import Budget, CallMeter
from agent.lifecycle.shutdown import graceful_stop, request_stop
from agent.providers.client import CallContext, ProviderError, Providers
from agent.providers.config import ConfigError, ProvidersConfig, load_providers_config, role_fields
from agent.providers.endpoints import redacted_dump
from agent.providers.images import prepare_image
from prompts import render
from scripts.sim.server import SimConfig, Simulator
from store.blobs import BlobStore
from store.cache import CallCache
from store.traces import TraceStore

KEY = "sk-ltgc-DISTINCTIVE-test-key-7f3a9c"
CTX = CallContext(run_id="r1", class_name="red fox", node="describe")
DESCRIBE = render("prompt1_describe", class_name="red fox")


@dataclass
class Env:
    sim: Simulator
    providers: Providers
    cache: CallCache
    traces: TraceStore
    blobs: BlobStore
    root: Path

    async def rows(self) -> list[Any]:
        await self.traces.flush()
        return await self.traces.query(run_id="r1")


def _config(sim: Simulator, **role_settings: Any) -> ProvidersConfig:
    common = {"base_url": sim.base_url, "backoff_initial_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 5,
              "per_minute": 60_000, "max_attempts": 4}
    overrides = {r: {**common, "model": f"sim-{r}", **{k: v for k, v in role_settings.items() if k in role_fields(r)}}
                 for r in ("lmm", "llm", "t2i")}
    return load_providers_config(env={}, overrides=overrides)


async def _open(sim: Simulator, root: Path, cfg: ProvidersConfig, **kw: Any) -> Env:
    cache = await CallCache.open(root / "cache.sqlite")
    traces = await TraceStore.open(root / "traces.sqlite")
    blobs = BlobStore(root / "blobs")
    providers = await Providers.open(cfg, cache=cache, traces=traces, blobs=blobs, env=kw.pop("env", {}), **kw)
    return Env(sim, providers, cache, traces, blobs, root)


async def _close(env: Env) -> None:
    await env.providers.close()
    await env.traces.close()
    await env.cache.close()


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimConfig(retry_after_s=0.2, hang_s=2.0)) as s:
        yield s


@pytest.fixture
async def env(sim: Simulator, tmp_path: Path) -> AsyncIterator[Env]:
    e = await _open(sim, tmp_path, _config(sim))
    yield e
    await _close(e)


def _png(w: int, h: int, color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, "PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------------------- happy paths
async def test_text_chat_then_cache_hit_sends_no_request(env: Env) -> None:
    first = await env.providers.chat("llm", "Please summarize the most distinctive features of class [red fox].",
                                     ctx=CTX)
    assert first.text.startswith("A photo of the class") and not first.cache_hit
    assert first.input_tokens and first.output_tokens
    before = env.sim.stats()["total"]
    second = await env.providers.chat("llm", "Please summarize the most distinctive features of class [red fox].",
                                      ctx=CTX)
    assert env.sim.stats()["total"] == before == 1
    assert second.cache_hit and second.text == first.text and second.call_id != first.call_id
    rows = {r.call_id: r for r in await env.rows()}
    miss, hit = rows[first.call_id], rows[second.call_id]
    assert (miss.cache_hit, miss.attempts, miss.status) == (False, 1, "ok")
    assert miss.input_tokens == first.input_tokens and miss.output_tokens == first.output_tokens
    assert (hit.cache_hit, hit.attempts) == (True, 0)
    assert env.providers.limiters["llm"].granted == 1  # the hit never touched the limiter


async def test_sample_index_and_namespace_make_fresh_calls(env: Env) -> None:
    await env.providers.chat("llm", "hello", ctx=CTX)
    await env.providers.chat("llm", "hello", ctx=CallContext("r1", "red fox", "describe", sample_index=1))
    assert env.sim.stats()["requests"]["chat"] == 2


async def test_vision_chat_downscales_and_keys_on_the_sent_bytes(env: Env) -> None:
    image = _png(1600, 400)
    result = await env.providers.chat("lmm", DESCRIBE, images=[image], ctx=CTX)
    assert result.text.startswith("A photo of the class red fox")
    assert env.sim.stats()["by_kind"].get("describe") == 1
    sent, mime = prepare_image(image, env.providers.config.lmm.max_image_side)
    assert Image.open(io.BytesIO(sent)).size == (768, 192) and mime == "image/jpeg"
    (row,) = await env.rows()
    part = row.request["messages"][0]["content"][1]["image_url"]
    assert part == {"sha256": hashlib.sha256(sent).hexdigest(), "mime": "image/jpeg"}
    assert "base64" not in json.dumps(row.request)
    # Same pixels again: a hit. Different pixels: a new request.
    assert (await env.providers.chat("lmm", DESCRIBE, images=[image], ctx=CTX)).cache_hit
    await env.providers.chat("lmm", DESCRIBE, images=[_png(1600, 400, "blue")], ctx=CTX)
    assert env.sim.stats()["requests"]["chat"] == 2


async def test_unreadable_input_image_is_a_bad_request_without_a_request(env: Env) -> None:
    with pytest.raises(ProviderError) as info:
        await env.providers.chat("lmm", DESCRIBE, images=[b"not an image"], ctx=CTX)
    assert info.value.kind == "bad_request" and env.sim.stats()["total"] == 0


async def test_image_generation_b64_stores_a_valid_blob_and_caches(env: Env) -> None:
    result = await env.providers.generate_image("A photo of the class red fox, in snow.", ctx=CTX)
    data = env.blobs.read(result.sha256)
    assert hashlib.sha256(data).hexdigest() == result.sha256 and result.ext == "png"
    Image.open(io.BytesIO(data)).load()
    again = await env.providers.generate_image("A photo of the class red fox, in snow.", ctx=CTX)
    assert again.cache_hit and again.sha256 == result.sha256
    assert env.sim.stats()["requests"]["images"] == 1
    (miss, hit) = sorted(await env.rows(), key=lambda r: r.cache_hit)
    assert (miss.images, miss.operation, hit.images) == (1, "image_generation", 0)


async def test_image_url_answers_are_downloaded(sim: Simulator, tmp_path: Path) -> None:
    env = await _open(sim, tmp_path, _config(sim, response_format="url"))
    try:
        result = await env.providers.generate_image("A photo of the class red fox, at dusk.", ctx=CTX)
        assert env.blobs.exists(result.sha256)
        assert sim.stats()["requests"]["files"] == 1
    finally:
        await _close(env)


async def test_an_image_download_over_the_cap_fails_once_with_one_line(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The simulator announces its PNG's length: over the cap, the body is not read and not retried."""
    monkeypatch.setattr(providers_module, "MAX_DOWNLOAD_BYTES", 40)
    env = await _open(sim, tmp_path, _config(sim, response_format="url"))
    try:
        with pytest.raises(ProviderError) as info:
            await env.providers.generate_image("A photo of the class red fox, at noon.", ctx=CTX)
        assert info.value.kind == "bad_response" and "announced" in info.value.message
        assert "MiB limit for one image" in info.value.message and "\n" not in str(info.value)
        assert sim.stats()["requests"]["files"] == 1  # a too-large image is not fetched again
        (row,) = await env.rows()
        assert (row.status, row.error_kind) == ("error", "bad_response")
    finally:
        await _close(env)


async def test_a_streamed_download_without_length_is_cut_at_the_cap(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No Content-Length (chunked): the download stops once the bytes pass the cap; the query (a pre-signed
    token) never reaches the message."""
    import httpx

    sent = []

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(1000):
            sent.append(1)
            yield b"x" * 1024

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=endless())

    monkeypatch.setattr(providers_module, "MAX_DOWNLOAD_BYTES", 8 * 1024)
    env = await _open(sim, tmp_path, _config(sim, response_format="url"))
    try:
        await env.providers._download.aclose()
        env.providers._download = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        with pytest.raises(ProviderError) as info:
            await env.providers._download_once("https://cdn.example/img/a.png?sig=SECRET")
        assert info.value.kind == "bad_response" and "more than 8192 bytes sent" in info.value.message
        assert "https://cdn.example/img/a.png" in info.value.message and "SECRET" not in info.value.message
        assert len(sent) < 20  # stopped near the cap, not after the whole 1 MB
    finally:
        await _close(env)


async def test_calls_queued_at_a_slow_rate_limit_end_at_once_on_stop_and_are_never_sent(
    sim: Simulator, tmp_path: Path
) -> None:
    """per_minute 2 (one token per 30 s): the first chat goes out, four more queue for tokens. A stop
    request ends their wait within a poll instead of draining the queue at the token rate (2 minutes) and
    then sending them; each ends as ``stopped``, and the server saw one request."""
    env = await _open(sim, tmp_path, _config(sim, per_minute=2))
    try:
        with graceful_stop():
            first = await env.providers.chat("llm", "hello 0", ctx=CTX)
            queued = [asyncio.create_task(env.providers.chat("llm", f"hello {i}", ctx=CTX)) for i in range(1, 5)]
            await asyncio.sleep(0.3)  # all four now wait at the limiter (past the pre-budget stop check)
            assert not any(t.done() for t in queued)
            t0 = time.perf_counter()
            request_stop()
            results = await asyncio.wait_for(asyncio.gather(*queued, return_exceptions=True), timeout=5)
            assert time.perf_counter() - t0 < 2.0
        assert first.text and sim.stats()["requests"]["chat"] == 1
        assert all(isinstance(r, ProviderError) and r.kind == "stopped" for r in results), results
        rows = await env.rows()
        assert sorted(r.error_kind or "ok" for r in rows) == ["ok", "stopped", "stopped", "stopped", "stopped"]
        assert sum(r.attempts for r in rows) == 1  # attempts count requests sent: the stopped ones sent none
    finally:
        await _close(env)


# ------------------------------------------------------------------------------------ retry policy
async def test_429_waits_at_least_retry_after(env: Env) -> None:
    env.sim.set_config(retry_after_s=1.0)
    env.sim.inject("429", 1, endpoint="chat")
    t0 = time.perf_counter()
    await env.providers.chat("llm", "hello", ctx=CTX)
    assert time.perf_counter() - t0 >= 1.0  # backoff alone would be ~0.01 s
    (row,) = await env.rows()
    assert row.attempts == 2 and env.sim.stats()["requests"]["chat"] == 2


@pytest.mark.parametrize("fault", ["500", "503", "reset", "malformed_json"])
async def test_transient_faults_are_retried_then_succeed(env: Env, fault: str) -> None:
    env.sim.inject(fault, 2, endpoint="chat")
    result = await env.providers.chat("llm", "hello", ctx=CTX)
    assert result.text and env.sim.stats()["requests"]["chat"] == 3
    (row,) = await env.rows()
    assert (row.attempts, row.status) == (3, "ok")


async def test_hang_past_timeout_is_retried(sim: Simulator, tmp_path: Path) -> None:
    env = await _open(sim, tmp_path, _config(sim, timeout_s=0.3))
    try:
        sim.inject("hang", 1, endpoint="chat")
        await env.providers.chat("llm", "hello", ctx=CTX)
        assert sim.stats()["requests"]["chat"] == 2
    finally:
        await _close(env)


async def test_invalid_image_bytes_are_retried(env: Env) -> None:
    env.sim.inject("bad_image", 1, endpoint="images")
    result = await env.providers.generate_image("A photo of the class red fox.", ctx=CTX)
    Image.open(io.BytesIO(env.blobs.read(result.sha256))).load()
    assert env.sim.stats()["requests"]["images"] == 2


async def test_attempts_are_bounded(env: Env) -> None:
    env.sim.inject("500", 4, endpoint="chat")  # exactly max_attempts
    with pytest.raises(ProviderError) as info:
        await env.providers.chat("llm", "hello", ctx=CTX)
    assert (info.value.kind, info.value.status, info.value.attempts) == ("exhausted", 500, 4)
    assert env.sim.stats()["requests"]["chat"] == 4
    (row,) = await env.rows()
    assert (row.status, row.error_kind, row.attempts) == ("error", "exhausted", 4)
    # Failures are not cached: the next call asks again (and the fault queue is now empty).
    assert not (await env.providers.chat("llm", "hello", ctx=CTX)).cache_hit
    assert env.sim.stats()["requests"]["chat"] == 5


async def test_400_and_refusals_are_not_retried(env: Env) -> None:
    with pytest.raises(ProviderError) as info:
        await env.providers.generate_image("", ctx=CTX)  # the server answers 400 to an empty prompt
    assert (info.value.kind, info.value.status, info.value.attempts) == ("bad_request", 400, 1)
    env.sim.inject("refusal", 1, endpoint="images")
    with pytest.raises(ProviderError) as info:
        await env.providers.generate_image("A photo of the class red fox.", ctx=CTX)
    assert (info.value.kind, info.value.attempts) == ("refused", 1)
    assert "safety system" in info.value.message  # the server's message, carried to the item
    assert env.sim.stats()["requests"]["images"] == 2
    rows = await env.rows()
    assert sorted(r.error_kind for r in rows) == ["bad_request", "refused"]
    # A refusal is not cached: asking again reaches the server and now succeeds.
    await env.providers.generate_image("A photo of the class red fox.", ctx=CTX)
    assert env.sim.stats()["requests"]["images"] == 3


# ------------------------------------------------------------------------------------------ limits
async def test_max_in_flight_is_never_exceeded_at_the_server(sim: Simulator, tmp_path: Path) -> None:
    sim.set_config(latency_ms=40)
    env = await _open(sim, tmp_path, _config(sim, max_in_flight=4))
    try:
        await asyncio.gather(*(env.providers.chat("llm", f"hello {i}", ctx=CTX) for i in range(24)))
        assert sim.stats()["max_in_flight"] == 4  # reached, never passed
        assert env.providers.limiters["llm"].peak_in_flight == 4
    finally:
        await _close(env)


async def test_per_minute_rate_holds_at_the_server(sim: Simulator, tmp_path: Path) -> None:
    per_minute, capacity, n = 600, 10, 20  # 10/s with a 10-token bucket: 10 at once, then one per 100 ms
    env = await _open(sim, tmp_path, _config(sim, per_minute=per_minute, max_in_flight=64))
    log = tmp_path / "sim.jsonl"
    try:
        # Open the connections first (a burst of fresh connections delays the server's stamps), then let
        # the bucket refill, then log only the measured burst.
        await asyncio.gather(*(env.providers.chat("llm", f"warm {i}", ctx=CTX) for i in range(capacity)))
        await asyncio.sleep(capacity / (per_minute / 60))
        sim.set_config(log_path=str(log))
        t0 = time.perf_counter()
        await asyncio.gather(*(env.providers.chat("llm", f"hello {i}", ctx=CTX) for i in range(n)))
        assert time.perf_counter() - t0 >= (n - capacity) / (per_minute / 60) * 0.95
    finally:
        await _close(env)
    sim.set_config(log_path=None)
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    arrivals = sorted(e["time"] - e["latency_ms"] / 1000 for e in entries if e["endpoint"] == "chat")
    assert len(arrivals) == n
    # `lag` allows for the server stamping a request when its handler thread gets the GIL (the client
    # shares this process); an unlimited client (20 requests within ~0.1 s) fails: 20 > 10 + 10 * 0.25 + 1.
    rate, lag = per_minute / 60, 0.15
    for i, start in enumerate(arrivals):
        for j in range(i, n):
            assert j - i + 1 <= capacity + rate * (arrivals[j] - start + lag) + 1


async def test_budget_meter_refuses_before_sending(sim: Simulator, tmp_path: Path) -> None:
    meter = CallMeter(Budget(max_calls=1))
    env = await _open(sim, tmp_path, _config(sim), meter=meter)
    try:
        await env.providers.chat("llm", "one", ctx=CTX)
        await env.providers.chat("llm", "one", ctx=CTX)  # a cache hit is free
        with pytest.raises(ProviderError) as info:
            await env.providers.chat("llm", "two", ctx=CTX)
        assert info.value.kind == "budget" and sim.stats()["total"] == 1
    finally:
        await _close(env)


# -------------------------------------------------------------------------------------------- keys
async def test_missing_key_for_a_remote_server_fails_at_open(tmp_path: Path) -> None:
    cfg = load_providers_config(env={})
    async with await CallCache.open(tmp_path / "c.sqlite") as cache, \
            await TraceStore.open(tmp_path / "t.sqlite") as traces:
        with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
            await Providers.open(cfg, cache=cache, traces=traces, blobs=BlobStore(tmp_path / "b"), env={})


async def test_api_key_reaches_the_server_but_no_file(sim: Simulator, tmp_path: Path) -> None:
    sim.set_config(require_key=True, log_path=str(tmp_path / "sim.jsonl"))
    env = await _open(sim, tmp_path, _config(sim, response_format="url"), env={"OPENAI_API_KEY": KEY})
    try:
        await env.providers.chat("lmm", DESCRIBE, images=[_png(64, 64)], ctx=CTX)
        await env.providers.chat("llm", "hello", ctx=CTX)
        await env.providers.generate_image("A photo of the class red fox.", ctx=CTX)
        env.sim.inject("refusal", 1, endpoint="images")
        with pytest.raises(ProviderError):
            await env.providers.generate_image("A photo of the class red fox, again.", ctx=CTX)
        assert "401" not in json.dumps(sim.stats()["faults"]) and sim.stats()["total"] == 4
    finally:
        (tmp_path / "config.json").write_text(json.dumps(redacted_dump(env.providers.config)))
        await _close(env)
        sim.set_config(log_path=None)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {"cache.sqlite", "traces.sqlite", "config.json", "sim.jsonl"} <= {p.name for p in files}
    assert any(p.suffix == ".png" for p in files)
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path


async def test_a_very_long_prompt_is_sent_whole_but_traced_cut(env: Env) -> None:
    prompt = "Besides these descriptions mentioned above, " + "A photo of the class red fox, in snow. " * 3000
    result = await env.providers.chat("llm", prompt, ctx=CTX)
    assert result.input_tokens and result.input_tokens > 10_000  # the server saw all of it
    (row,) = await env.rows()
    traced = row.request["messages"][0]["content"]
    assert traced.startswith(prompt[:1000]) and "chars in all]" in traced and len(traced) < len(prompt)


async def test_trace_rows_tell_queue_wait_from_server_time(sim: Simulator, tmp_path: Path) -> None:
    """A 50 ms server behind a 1-in-flight, 120/min limiter: the calls wait seconds in the queue, but each
    spends ~50 ms on the wire; the trace keeps the two apart (latency = the whole call)."""
    sim.set_config(latency_ms=50)
    env = await _open(sim, tmp_path, _config(sim, max_in_flight=1, per_minute=120))
    try:
        prompts = [f"Please summarize the most distinctive features of class [fox {i}]." for i in range(5)]
        await asyncio.gather(*(env.providers.chat("llm", p, ctx=CTX) for p in prompts))
        rows = await env.rows()
    finally:
        await _close(env)
    assert len(rows) == 5
    assert all(0.04 <= r.server_s < 1.0 for r in rows), [r.server_s for r in rows]
    assert sum(r.queue_s for r in rows) > 1.0  # 2 tokens/s after a burst of 2: the last ones wait ~1.5 s
    assert all(r.queue_s + r.server_s <= r.latency_s + 1e-3 for r in rows)
