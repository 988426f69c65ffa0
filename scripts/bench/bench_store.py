"""Per-call overhead of the store: cache miss+put, cache hit, trace add, amortised trace flush.

    python -m scripts.bench.bench_store [--n 2000] [--dir DIR]

Prints p50 / p95 in microseconds. Runs on a temp dir (or ``--dir``); touches no network.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from store.cache import CallCache, cache_key
from store.traces import TraceRecord, TraceStore


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _report(name: str, samples_s: list[float]) -> str:
    us = [s * 1e6 for s in samples_s]
    return f"{name:<28} p50 {_pct(us, 0.5):8.1f} us   p95 {_pct(us, 0.95):8.1f} us   mean {statistics.fmean(us):8.1f} us"


async def _bench(root: Path, n: int) -> list[str]:
    body = {"model": "m", "messages": [{"role": "user", "content": "Besides these descriptions mentioned above"}]}
    value = {"choices": [{"message": {"content": "A photo of the class cat, " + "x" * 400}}],
             "usage": {"prompt_tokens": 50, "completion_tokens": 40}}
    miss_put: list[float] = []
    hit: list[float] = []
    async with await CallCache.open(root / "cache.sqlite") as cache:
        keys = [cache_key(role="llm", model="m", body=body, sample_index=i) for i in range(n)]
        for key in keys:
            t0 = time.perf_counter()
            if await cache.get(key) is None:
                await cache.put(key, value, role="llm", model="m")
            miss_put.append(time.perf_counter() - t0)
        for key in keys:
            t0 = time.perf_counter()
            await cache.get(key)
            hit.append(time.perf_counter() - t0)
    key_t: list[float] = []
    for i in range(n):
        t0 = time.perf_counter()
        cache_key(role="llm", model="m", body=body, sample_index=i)
        key_t.append(time.perf_counter() - t0)

    add: list[float] = []
    flush_per_record: list[float] = []
    store = await TraceStore.open(root / "traces.sqlite", batch_size=10**9, flush_interval_s=3600)
    for i in range(n):
        rec = TraceRecord(run_id="bench", class_name=f"c{i % 10}", node="extend", role="llm", operation="chat",
                          model="m", request=body, response_text="A photo of the class cat, " + "x" * 400,
                          input_tokens=50, output_tokens=40, attempts=1)
        t0 = time.perf_counter()
        store.add(rec)
        add.append(time.perf_counter() - t0)
        if i % 64 == 63:  # flush explicitly in batches of 64 (the default batch_size) to time them
            t0 = time.perf_counter()
            await store.flush()
            flush_per_record.append((time.perf_counter() - t0) / 64)
    t0 = time.perf_counter()
    await store.close()
    close_s = time.perf_counter() - t0
    return [
        _report("cache_key", key_t),
        _report("cache get(miss)+put", miss_put),
        _report("cache get(hit)", hit),
        _report("trace add (sync, buffered)", add),
        _report("trace flush, per record", flush_per_record),
        f"trace close (last batch + WAL checkpoint): {close_s * 1e3:.1f} ms, once per run",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=2000, help="calls per measurement (default 2000)")
    parser.add_argument("--dir", type=Path, default=None, help="folder for the SQLite files (default: temp)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be >= 1")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.dir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for line in asyncio.run(_bench(root, args.n)):
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
