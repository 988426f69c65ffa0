"""Per-call overhead of the providers layer (cache + limiter + retry + trace) over the raw OpenAI SDK.

Starts the simulator (``scripts/sim/server.py``, latency 0) in a child process, then makes N chat calls
through :class:`agent.providers.client.Providers` and N raw ``AsyncOpenAI`` calls to the same server, interleaved
one by one so both see the same machine load. Prompts are distinct, so every Providers call is a cache miss
(a full pass: cache get, limiter, retry wrapper, request, cache put, trace row). A second pass repeats the
prompts: all cache hits, no request. Prints p50 / p95 in milliseconds, and the cost of each part alone.

    python -m scripts.bench.bench_overhead            # 500 calls each
    python -m scripts.bench.bench_overhead --quick    # 100 calls each, well under 20 s

The simulator's answers are synthetic; only the timings mean anything here.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    proc, base_url = _start_simulator()
    try:
        with tempfile.TemporaryDirectory(prefix="ltgc-bench-") as tmp:
            results = asyncio.run(_bench(base_url, args.n, Path(tmp)))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(_table(results, args.n))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.bench.bench_overhead", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=500, help="calls per series (default 500)")
    p.add_argument("--quick", action="store_true", help="100 calls per series")
    p.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    args = p.parse_args(argv)
    if args.quick:
        args.n = min(args.n, 100)
    if args.n < 2:
        p.error("--n must be at least 2")
    return args


def _start_simulator() -> tuple[subprocess.Popen[str], str]:
    """The simulator in its own process, so its threads do not share our GIL (as a real server would not)."""
    proc = subprocess.Popen([sys.executable, "-m", "scripts.simulator", "--port", "0", "--latency-ms", "0"],
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"bench_overhead: the simulator did not start (said {line!r})")
    return proc, line.removeprefix("listening on ")


async def _bench(base_url: str, n: int, root: Path) -> dict[str, Any]:
    import openai

    from agent.providers.client import CallContext, Providers
    from agent.providers.config import load_providers_config
    from store.blobs import BlobStore
    from store.cache import CallCache
    from store.traces import TraceStore

    role = {"base_url": base_url, "model": "sim-chat", "per_minute": 10**7, "max_in_flight": 64}
    cfg = load_providers_config(env={}, overrides={r: role for r in ("lmm", "llm", "t2i")})
    ctx = CallContext("bench", "bench", "bench")
    async with await CallCache.open(root / "cache.sqlite") as cache, \
            await TraceStore.open(root / "traces.sqlite") as traces:
        raw = openai.AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0, timeout=30)
        prov = await Providers.open(cfg, cache=cache, traces=traces, blobs=BlobStore(root / "blobs"), env={})
        try:
            return await _series(raw, prov, ctx, cache, traces, n)
        finally:
            await prov.close()
            await raw.close()


async def _series(raw: Any, prov: Any, ctx: Any, cache: Any, traces: Any, n: int) -> dict[str, Any]:
    """Raw and Providers calls interleaved (misses), then the same prompts again (hits), then the parts."""
    prompts = [f"Say something about item {i}." for i in range(n)]
    for p in ("warm up one", "warm up two"):  # open connections, load lazy imports
        await raw.chat.completions.create(model="sim-chat", messages=[{"role": "user", "content": p}])
        await prov.chat("llm", p, ctx=ctx)
    raw_ms: list[float] = []
    miss_ms: list[float] = []
    for p in prompts:
        raw_ms.append(await _timed(functools.partial(
            raw.chat.completions.create, model="sim-chat", messages=[{"role": "user", "content": p}])))
        miss_ms.append(await _timed(functools.partial(prov.chat, "llm", p, ctx=ctx)))
    hit_ms = [await _timed(functools.partial(prov.chat, "llm", p, ctx=ctx)) for p in prompts]
    parts = await _parts(prov, cache, traces, n)
    overhead = [m - r for m, r in zip(miss_ms, raw_ms, strict=True)]
    return {"n": n, "raw_sdk": _summary(raw_ms), "providers_miss": _summary(miss_ms),
            "overhead_miss": _summary(overhead), "providers_hit": _summary(hit_ms), "parts": parts}


async def _parts(prov: Any, cache: Any, traces: Any, n: int) -> dict[str, dict[str, float]]:
    """Each part of the pass on its own (ms per call)."""
    from store.cache import cache_key
    from store.traces import TraceRecord

    body = {"model": "m", "messages": [{"role": "user", "content": "x" * 200}]}
    keys = [cache_key(role="llm", model="m", body={**body, "i": i}) for i in range(n)]
    value: dict[str, Any] = {"text": "A photo of the class x.", "finish_reason": "stop", "input_tokens": 9, "output_tokens": 9}
    limiter = prov.limiters["llm"]

    async def acquire() -> None:
        async with limiter.acquire():
            pass

    async def add_trace() -> None:
        traces.add(TraceRecord(run_id="b", class_name="b", node="b", role="llm", operation="chat",
                               model="m", request=body, response_text=value["text"]))

    out = {
        "cache_key": _summary([await _timed(_async(lambda: cache_key(role="llm", model="m", body=body)))
                               for _ in range(n)]),
        "cache_get_miss": _summary([await _timed(functools.partial(cache.get, k)) for k in keys]),
        "cache_put": _summary([await _timed(functools.partial(cache.put, k, value, role="llm", model="m"))
                               for k in keys]),
        "limiter_acquire": _summary([await _timed(acquire) for _ in range(n)]),
        "trace_add": _summary([await _timed(add_trace) for _ in range(n)]),
    }
    await traces.flush()
    return out


def _async(fn: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    async def run() -> Any:
        return fn()

    return run


async def _timed(fn: Callable[[], Awaitable[Any]]) -> float:
    t0 = time.perf_counter()
    await fn()
    return (time.perf_counter() - t0) * 1000.0


def _summary(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {"p50": statistics.median(ordered), "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
            "mean": statistics.fmean(ordered)}


def _table(r: dict[str, Any], n: int) -> str:
    rows = [("raw SDK call (simulator, latency 0)", r["raw_sdk"]),
            ("Providers.chat, cache miss", r["providers_miss"]),
            ("  overhead per call (miss - raw, paired)", r["overhead_miss"]),
            ("Providers.chat, warm cache hit", r["providers_hit"])]
    rows += [(f"  part: {name}", s) for name, s in r["parts"].items()]
    width = max(len(name) for name, _ in rows)
    lines = [f"per-call cost over {n} calls (ms)", f"{'':{width}}  {'p50':>8}  {'p95':>8}  {'mean':>8}"]
    lines += [f"{name:{width}}  {s['p50']:8.3f}  {s['p95']:8.3f}  {s['mean']:8.3f}" for name, s in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
