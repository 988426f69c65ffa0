"""Per-call overhead of ``agent.providers.client.Providers``, one call at a time (used by scripts/bench/bench_agent.py).

Sequential calls at simulator latency 0 through the real ``Providers`` with real stores (cache, traces,
blobs in a temp folder): text chat (``llm``), vision chat (``lmm``, one 32 px PNG) and image generation
(``t2i``), then the same calls again (all cache hits). Per call, overhead = provider wall - SDK wall -
limiter wait (``bench_probe.Probe``): what cache get/put, limiter, retry wrapper, image preparation or
decoding, blob write and trace add cost on top of the request itself. One at a time on purpose: with a
fan-out the event loop runs siblings while a call waits, and its wall would include their work.

Also the disk's ``fsync`` time: the blob store fsyncs every image before its cache entry is written
(a cache hit must never point at a lost blob), so an image call pays at least one fsync.
"""

from __future__ import annotations

import asyncio
import io
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from scripts.bench.bench_probe import CallTiming, Probe, percentile


async def provider_overhead(base_url: str, n: int) -> dict[str, Any]:
    """``n`` text chats, ``n`` // 2 vision chats and ``n`` // 2 images, cold then warm; ms per call."""
    from agent.providers.client import CallContext, Providers
    from agent.providers.config import load_providers_config
    from store.blobs import BlobStore
    from store.cache import CallCache
    from store.traces import TraceStore

    role = {"base_url": base_url, "model": "sim", "per_minute": 1e6, "max_in_flight": 8}
    config = load_providers_config(None, {}, {r: dict(role) for r in ("lmm", "llm", "t2i")})
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        root = Path(tmp)
        cache, traces = await CallCache.open(root / "cache.sqlite"), await TraceStore.open(root / "traces.sqlite")
        providers = await Providers.open(config, cache=cache, traces=traces, blobs=BlobStore(root / "blobs"))
        try:
            await _calls(providers, CallContext("warmup", "warm up", "render"), 3)  # first-use costs
            ctx = CallContext("bench", "bench class", "render")
            with Probe() as cold:
                await _calls(providers, ctx, n)
            with Probe() as warm:
                await _calls(providers, ctx, n)
        finally:
            await providers.close()
            await traces.close()
            await cache.close()
    return {"calls": len(cold.calls), **_split(cold.calls, "miss"), **_split(warm.calls, "hit"),
            "fsync_ms": _fsync_ms()}


async def _calls(providers: Any, ctx: Any, n: int) -> None:
    png = _png()
    for i in range(n):
        await providers.chat("llm", f"Please summarize the most distinctive features of class [item {i}]", ctx=ctx)
    for i in range(n // 2):
        await providers.chat("lmm", f"Please briefly describe the image of the class [item {i}]",
                             images=[png], ctx=ctx)
        await providers.generate_image(f"A photo of the class item {i}, with a red tail.", ctx=ctx)


def _split(calls: list[CallTiming], label: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("chat", "image"):
        ms = [1000 * c.overhead_s for c in calls if c.kind == kind]
        out[f"{kind}_{label}_ms"] = {"p50": round(percentile(ms, 50), 3), "p95": round(percentile(ms, 95), 3),
                                     "n": len(ms)}
    return out


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 40, 40)).save(buf, format="PNG")
    return buf.getvalue()


def _fsync_ms(n: int = 30) -> dict[str, float]:
    """p50 / p95 of writing 4 KB to a new file and fsyncing it, in the temp folder's file system."""
    times = []
    with tempfile.TemporaryDirectory(prefix="bench-fsync-") as tmp:
        for i in range(n):
            start = time.perf_counter()
            with open(os.path.join(tmp, f"{i}.bin"), "wb") as fh:
                fh.write(b"x" * 4096)
                fh.flush()
                os.fsync(fh.fileno())
            times.append(1000 * (time.perf_counter() - start))
    return {"p50": round(percentile(times, 50), 3), "p95": round(percentile(times, 95), 3)}


def run(base_url: str, n: int) -> dict[str, Any]:
    return asyncio.run(provider_overhead(base_url, n))
