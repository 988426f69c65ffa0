"""Agent performance against the simulator: latency bound, per-call overhead, warm rerun, checkpoint size.

Every phase runs the real product entry point (``agent.run.main``, in this process so torch/langgraph are
imported once) against ``scripts.simulator`` in a subprocess, with the tiny CLIP config as the scorer and
threshold -1 (every image accepted: the call count is then fixed by K and M_y alone, no refine lottery).
The phases run one after another in ONE process, so their ratios share the machine's load of the moment.

1. **throughput** — C classes (default 50), K (default 40) and M_y (default 4) so a run makes >= 2,000
   calls; simulator latency log-normal (sigma 0.5) with MEAN ``--latency-ms`` (default 200; the simulator
   takes the median, mean / exp(sigma^2 / 2)). Concurrency c = 1, 8, 64: one limiter of c slots shared by
   the three roles (``bench_probe.Probe``), every class in flight, so c is exactly the requests in flight
   and c = 1 is the sequential reference on the same code path. bound = requests x mean latency / c.
   floor = the same number of chat / image requests sent by the bare openai SDK at concurrency c to a fresh
   simulator: what the machine, the client library and the simulator allow before any agent code runs.
2. **overhead** — latency 0. Provider calls one at a time (``scripts/bench/bench_overhead_calls.py``): per
   call, provider wall (cache + limiter + retry + trace, + image decode / blob write) minus the SDK call's
   wall, p50 / p95, cache misses and hits. Then a sequential graph run (one class, one request at a time):
   checkpoint writes (``aput`` / ``aput_writes``) p50 / p95 and their share per call, and all of the agent's
   own time per call, (run wall - SDK time) / calls, which adds node logic, parsing and CLIP scoring.
3. **warm rerun** — a 100-class run at latency 0, then the same run again into the same folder (a fresh
   run, not ``--resume``: every class restarts at describe and every call must be a cache hit).
   Wall time and simulator requests of the second run; checkpoint DB bytes per class; peak RSS.

    python -m scripts.bench.bench_agent                     # full (~10 min: c = 1 alone is ~2,200 x 0.2 s)
    python -m scripts.bench.bench_agent --quick             # tiny sizes, every phase (CI, < 1 min)
    python -m scripts.bench.bench_agent --json agent.json   # also write every number
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scripts.bench.bench_probe import (
    Inputs,
    Probe,
    SimProcess,
    make_inputs,
    peak_rss_mib,
    percentile,
    sdk_floor,
)

SIGMA = 0.5


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-agent-"))
    try:
        _warm_up(root, args)
        results: dict[str, Any] = {"settings": {k: v for k, v in vars(args).items() if k != "json"}}
        if "throughput" in args.phases:
            results["throughput"] = [_throughput(root, args, c) for c in args.concurrency]
        if "overhead" in args.phases:
            results["overhead"] = _overhead(root, args)
        if "warm" in args.phases:
            results["warm"] = _warm_rerun(root, args)
        results["peak_rss_mib"] = round(peak_rss_mib(), 1)
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)
    _print(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.bench.bench_agent", description=__doc__.split("\n")[0])
    p.add_argument("--classes", type=int, default=50, help="classes of the throughput runs (C)")
    p.add_argument("--k", type=int, default=40, help="K_y, descriptions per class")
    p.add_argument("--per-class", type=int, default=4, help="M_y, real images per class")
    p.add_argument("--latency-ms", type=float, default=200.0, help="MEAN simulator latency (log-normal)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64], help="requests in flight")
    p.add_argument("--overhead-classes", type=int, default=10, help="classes of the latency-0 graph run")
    p.add_argument("--overhead-calls", type=int, default=200, help="text chats of the provider overhead pass")
    p.add_argument("--warm-classes", type=int, default=100, help="classes of the warm-rerun run")
    p.add_argument("--phases", default="throughput,overhead,warm",
                   help="comma-separated subset of throughput, overhead, warm (default: all)")
    p.add_argument("--durability", nargs="+", default=["sync", "async"], choices=["sync", "async", "exit"],
                   help="LangGraph checkpoint modes compared side by side in the overhead and warm phases "
                        "(agent.lifecycle.driver.DURABILITY; the product uses 'sync')")
    p.add_argument("--warm-repeats", type=int, default=2, help="warm reruns per durability mode (interleaved)")
    p.add_argument("--workdir", default="", help="keep run folders here (default: a temp dir, removed)")
    p.add_argument("--quick", action="store_true", help="tiny sizes for CI; the numbers mean nothing")
    p.add_argument("--json", default="", help="write every number here")
    args = p.parse_args(argv)
    args.phases = [x.strip() for x in args.phases.split(",") if x.strip()]
    if not args.phases or set(args.phases) - {"throughput", "overhead", "warm"}:
        p.error("--phases: use a comma-separated subset of throughput, overhead, warm")
    if args.quick:
        args.classes, args.k, args.per_class, args.latency_ms = 3, 6, 2, 20.0
        args.concurrency, args.overhead_classes, args.warm_classes, args.overhead_calls = [1, 8], 2, 4, 10
    if min(args.classes, args.k, args.per_class, args.overhead_classes, args.warm_classes, args.warm_repeats,
           *args.concurrency) < 1:
        p.error("sizes and concurrency levels must be >= 1")
    return args


def _run_agent(inputs: Inputs, out: Path, base_url: str, args: argparse.Namespace, *,
               cap: int, classes_in_flight: int) -> float:
    """One ``python -m agent.run`` (in-process); returns its wall time. Its log lines are kept quiet."""
    from agent.run import main as agent_main

    argv = ["--classes", str(inputs.tail), "--images", str(inputs.images), "--out", str(out),
            "--run-id", "bench", "--target-per-class", str(args.k), "--threshold", "-1", "--max-rounds", "1",
            "--clip-model", str(inputs.clip_config), "--clip-pretrained", "none",
            "--max-classes-in-flight", str(classes_in_flight)]
    for role in ("lmm", "llm", "t2i"):
        argv += [f"--{role}-base-url", base_url, f"--{role}-model", f"sim-{role}",
                 f"--{role}-max-in-flight", str(cap), f"--{role}-per-minute", "1000000"]
    log = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stderr(log), contextlib.redirect_stdout(log):
        rc = agent_main(argv)
    wall = time.perf_counter() - start
    if rc != 0:
        raise RuntimeError(f"agent.run exited {rc}:\n{log.getvalue()[-2000:]}")
    return wall


def _warm_up(root: Path, args: argparse.Namespace) -> None:
    """One untimed 1-class run: pays the one-time costs (importing torch / open_clip / langgraph, ~10-30 s
    here; first model build; tokenizer files) that no later run of a long-lived process pays again."""
    inputs = make_inputs(root / "inputs-warmup", 1, 1)
    with SimProcess(median_ms=0) as sim:
        _run_agent(inputs, root / "warmup", sim.base_url, args, cap=8, classes_in_flight=1)


def _throughput(root: Path, args: argparse.Namespace, c: int) -> dict[str, Any]:
    inputs = make_inputs(root / "inputs", args.classes, args.per_class)
    median = args.latency_ms / math.exp(SIGMA**2 / 2)
    cpu0 = time.process_time()
    with SimProcess(median_ms=median, sigma=SIGMA) as sim, Probe(shared_cap=c) as probe:
        wall = _run_agent(inputs, root / f"throughput-c{c}", sim.base_url, args, cap=c,
                          classes_in_flight=args.classes)
        stats = sim.stats()
    cpu = time.process_time() - cpu0
    requests = int(stats["total"])
    sdk, plain = _floor(stats, c, median, "sdk"), _floor(stats, c, median, "httpx")
    bound = requests * args.latency_ms / 1000 / c
    busy = sum(t.sdk_s for t in probe.calls)
    return {"concurrency": c, "classes": args.classes, "requests": requests, "wall_s": round(wall, 2),
            "bound_s": round(bound, 2), "ratio": round(wall / bound, 3), "sdk_floor_s": sdk["wall_s"],
            "floor_scaled_from": sdk["scaled_from"], "ratio_to_floor": round(wall / sdk["wall_s"], 3),
            "sdk_cpu_ms_per_request": sdk["cpu_ms_per_request"], "httpx_floor_s": plain["wall_s"],
            "httpx_cpu_ms_per_request": plain["cpu_ms_per_request"],
            "peak_in_flight": stats.get("max_in_flight"), "mean_in_flight": round(busy / wall, 1),
            "agent_cpu_ms_per_call": round(1000 * cpu / max(requests, 1), 2)}


def _floor(stats: dict[str, Any], c: int, median: float, client: str) -> dict[str, Any]:
    """The same request mix sent by a bare client (the openai SDK, or plain httpx) at concurrency c, on a
    fresh simulator with the same latency law: wall s and the client's CPU ms per request. Sequential
    (c = 1) is timed on a 200-request sample and scaled: the full run would double the benchmark's length
    to confirm a sum."""
    chats, images = int(stats["requests"].get("chat", 0)), int(stats["requests"].get("images", 0))
    total = chats + images
    sample = 200 if c == 1 and total > 200 else None
    if sample is not None:
        chats, images = round(sample * chats / total), sample - round(sample * chats / total)
    with SimProcess(median_ms=median, sigma=SIGMA, seed=1) as sim:
        wall, cpu = asyncio.run(sdk_floor(sim.base_url, chats=chats, images=images, concurrency=c, client=client))
    sent = chats + images
    return {"wall_s": round(wall * total / sent, 2), "scaled_from": sample,
            "cpu_ms_per_request": round(1000 * cpu / max(sent, 1), 2)}


def _overhead(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Provider calls one at a time (bench_overhead_calls), then a sequential graph run per checkpoint
    durability mode for what a call costs all in: checkpoint writes, node logic, parsing, CLIP scoring —
    (wall - SDK time) / calls."""
    from scripts.bench.bench_overhead_calls import run as provider_overhead

    inputs = make_inputs(root / "inputs-overhead", args.overhead_classes, args.per_class)
    graph_runs: dict[str, Any] = {}
    with SimProcess(median_ms=0) as sim:
        calls = provider_overhead(sim.base_url, args.overhead_calls)
        for mode in args.durability:
            before = int(sim.stats()["total"])
            with _durability(mode), Probe(shared_cap=1) as graph:
                wall = _run_agent(inputs, root / f"overhead-{mode}", sim.base_url, args, cap=1,
                                  classes_in_flight=1)
            requests = int(sim.stats()["total"]) - before
            ckpt = [1000 * s for s in graph.checkpoint_s]
            n = max(len(graph.calls), 1)
            graph_runs[mode] = {
                "graph_calls": len(graph.calls), "graph_requests": requests,
                "checkpoint_write_ms": {"p50": _r(percentile(ckpt, 50)), "p95": _r(percentile(ckpt, 95)),
                                        "writes_per_call": _r(len(ckpt) / n), "ms_per_call": _r(sum(ckpt) / n)},
                "agent_ms_per_call_all_in": _r(1000 * (wall - sum(t.sdk_s for t in graph.calls)) / n),
            }
    return {"provider": calls, "graph": graph_runs}


@contextlib.contextmanager
def _durability(mode: str) -> Iterator[None]:
    """Run the agent with LangGraph durability ``mode`` (restored afterwards)."""
    import agent.lifecycle.driver as runner

    saved = runner.DURABILITY
    runner.DURABILITY = mode  # type: ignore[assignment]
    try:
        yield
    finally:
        runner.DURABILITY = saved


def _warm_rerun(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One cold run, then fresh reruns into the same folder, each durability mode in turn (interleaved, so
    the modes share the machine's load); per mode the median warm wall time."""
    inputs = make_inputs(root / "inputs-warm", args.warm_classes, args.per_class)
    out = root / "warm"
    walls: dict[str, list[float]] = {mode: [] for mode in args.durability}
    with SimProcess(median_ms=0) as sim:
        cold = _run_agent(inputs, out, sim.base_url, args, cap=64, classes_in_flight=8)
        after_cold = int(sim.stats()["total"])
        ckpt_bytes = _db_bytes(out / "checkpoints.sqlite")
        for _ in range(args.warm_repeats):
            for mode in args.durability:
                with _durability(mode):
                    walls[mode].append(_r(_run_agent(inputs, out, sim.base_url, args, cap=64, classes_in_flight=8)))
        warm_requests = int(sim.stats()["total"]) - after_cold
    return {"classes": args.warm_classes, "cold_requests": after_cold, "cold_wall_s": _r(cold),
            "warm_wall_s": {mode: _r(statistics.median(w)) for mode, w in walls.items()}, "warm_walls_s": walls,
            "warm_requests": warm_requests,
            "checkpoint_db_bytes": ckpt_bytes, "checkpoint_kb_per_class": _r(ckpt_bytes / 1024 / args.warm_classes),
            "cache_db_bytes": _db_bytes(out / "cache.sqlite"), "traces_db_bytes": _db_bytes(out / "traces.sqlite")}


def _db_bytes(path: Path) -> int:
    """A SQLite database's bytes on disk, its write-ahead log included."""
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def _r(x: float) -> float:
    return round(x, 3)


def _print(res: dict[str, Any]) -> None:
    if "throughput" in res:
        _print_throughput(res)
    if "overhead" in res:
        _print_overhead(res)
    if "warm" in res:
        _print_warm(res)


def _print_throughput(res: dict[str, Any]) -> None:
    print("## throughput (bound = requests x mean latency / concurrency)")
    print("| concurrency | requests | wall s | bound s | wall / bound | bare-SDK floor s | wall / floor "
          "| SDK CPU ms/request | plain-httpx floor s | httpx CPU ms/request | peak in flight | mean in flight "
          "| agent CPU ms/call |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for t in res["throughput"]:
        floor = f"{t['sdk_floor_s']}" + (f" (scaled from {t['floor_scaled_from']})" if t["floor_scaled_from"] else "")
        print(f"| {t['concurrency']} | {t['requests']} | {t['wall_s']} | {t['bound_s']} | {t['ratio']} "
              f"| {floor} | {t['ratio_to_floor']} | {t['sdk_cpu_ms_per_request']} | {t['httpx_floor_s']} "
              f"| {t['httpx_cpu_ms_per_request']} | {t['peak_in_flight']} | {t['mean_in_flight']} "
              f"| {t['agent_cpu_ms_per_call']} |")


def _print_overhead(res: dict[str, Any]) -> None:
    o, p = res["overhead"], res["overhead"]["provider"]
    print(f"\n## overhead at latency 0 (provider calls one at a time; {p['calls']} calls per pass)")
    print("| per call | p50 ms | p95 ms |\n|---|---|---|")
    for key, label in (("chat_miss_ms", "chat, cache miss: cache + limiter + retry + trace (provider - SDK)"),
                       ("image_miss_ms", "image, cache miss: the same + b64 decode + blob write (fsync)"),
                       ("chat_hit_ms", "chat, cache hit"), ("image_hit_ms", "image, cache hit")):
        print(f"| {label} | {p[key]['p50']} | {p[key]['p95']} |")
    print(f"| disk fsync of a 4 KB file | {p['fsync_ms']['p50']} | {p['fsync_ms']['p95']} |")
    print("\nsequential graph run (one request at a time), per checkpoint durability mode:")
    print("| durability | calls | checkpoint write p50 ms | p95 ms | writes / call | write ms / call "
          "| agent ms / call, all in |\n|---|---|---|---|---|---|---|")
    for mode, g in o["graph"].items():
        ck = g["checkpoint_write_ms"]
        print(f"| {mode} | {g['graph_calls']} | {ck['p50']} | {ck['p95']} | {ck['writes_per_call']} "
              f"| {ck['ms_per_call']} | {g['agent_ms_per_call_all_in']} |")


def _print_warm(res: dict[str, Any]) -> None:
    w = res["warm"]
    print(f"\n## warm rerun ({w['classes']} classes; median of {len(next(iter(w['warm_walls_s'].values())))} "
          "interleaved reruns per durability mode)")
    print("| cold requests | cold wall s | durability | warm wall s (runs) | warm requests (all reruns) "
          "| checkpoint DB KB/class | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for mode, wall in w["warm_wall_s"].items():
        runs = ", ".join(str(x) for x in w["warm_walls_s"][mode])
        print(f"| {w['cold_requests']} | {w['cold_wall_s']} | {mode} | {wall} ({runs}) | {w['warm_requests']} "
              f"| {w['checkpoint_kb_per_class']} | {res['peak_rss_mib']} |")


if __name__ == "__main__":
    sys.exit(main())
