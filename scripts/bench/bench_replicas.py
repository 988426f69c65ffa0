"""Replicas per role (agent/providers/replicas.py): N chat calls through ``Providers`` against one simulator and
against two replicas of it, each server answering in ``--latency-ms`` with ``--max-in-flight`` requests per
replica — and two replicas of which one is stopped a third of the way through. Reports wall seconds,
calls/s, how the calls split between the replicas, and the failures (there must be none).

    python -m scripts.bench.bench_replicas [--calls 300] [--latency-ms 100] [--max-in-flight 4]

THE SIMULATOR'S CONTENT IS SYNTHETIC: the numbers are about dispatch, not about any model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from scripts.sim.server import SimConfig, Simulator


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--latency-ms", type=float, default=100.0)
    p.add_argument("--max-in-flight", type=int, default=4)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    out = {"calls": args.calls, "latency_ms": args.latency_ms, "max_in_flight_per_replica": args.max_in_flight}
    for case in ("one_server", "two_replicas", "two_replicas_one_stopped"):
        out[case] = asyncio.run(_case(case, args))
        print(f"{case}: {out[case]}", file=sys.stderr, flush=True)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0


async def _case(case: str, args: argparse.Namespace) -> dict[str, Any]:
    from agent.providers.client import CallContext, Providers
    from agent.providers.config import load_providers_config
    from agent.providers.retry import ProviderError
    from store.blobs import BlobStore
    from store.cache import CallCache
    from store.traces import TraceStore

    sims = [Simulator(SimConfig(latency_ms=args.latency_ms, seed=0)).start()
            for _ in range(1 if case == "one_server" else 2)]
    urls = ",".join(s.base_url for s in sims)
    role = {"base_url": urls, "model": "sim-llm", "per_minute": 10**7, "max_in_flight": args.max_in_flight,
            "backoff_initial_s": 0.05, "backoff_max_s": 0.5}
    cfg = load_providers_config(env={}, overrides={r: role for r in ("lmm", "llm", "t2i")})
    ctx = CallContext("bench", "bench", "bench")
    failures = 0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            async with await CallCache.open(root / "cache.sqlite") as cache, \
                    await TraceStore.open(root / "traces.sqlite") as traces:
                prov = await Providers.open(cfg, cache=cache, traces=traces, blobs=BlobStore(root / "blobs"), env={})
                done = 0

                async def one(i: int) -> None:
                    nonlocal done, failures
                    try:
                        await prov.chat("llm", f"Say something about item {i}.", ctx=ctx)
                    except ProviderError:
                        failures += 1
                    done += 1
                    if case.endswith("stopped") and done == args.calls // 3:
                        await asyncio.to_thread(sims[0].close)  # replica a goes away mid-run

                started = time.perf_counter()
                try:
                    await asyncio.gather(*(one(i) for i in range(args.calls)))
                finally:
                    await prov.close()
                wall = time.perf_counter() - started
                rows = await traces.query(run_id="bench")
                split = Counter(str(r.meta.get("replica", "only")) for r in rows)
    finally:
        for sim in sims:
            sim.close()
    return {"wall_s": round(wall, 2), "calls_per_s": round(args.calls / wall, 1), "failures": failures,
            "by_replica": sorted(split.values(), reverse=True)}


if __name__ == "__main__":
    sys.exit(main())
