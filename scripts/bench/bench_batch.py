"""One run in both modes against the simulator: synchronous requests vs the OpenAI Batch API (issue 15).

THE SIMULATOR'S DELAYS ARE SETTINGS, NOT MEASUREMENTS OF OPENAI: a real batch takes minutes to hours. What
this measures is what the agent does with them — how many requests and batches a run needs, what it costs
by the price table (from the traces), and how the wall time follows the delays — and that both modes
produce the same manifest.

Both runs use the real entry point (``agent.run.main``, in this process) on the same inputs: C classes
with M_y real images, K descriptions each, threshold -1 (every image accepted, so both runs make exactly
the same calls), the tiny CLIP config, real OpenAI model names (the packaged price table prices them), and
the same role limits (``max_in_flight`` 8, no per-minute cap). The simulator runs in a subprocess with a
log-normal synchronous latency (``--latency-ms``, median) and the batch lifecycle delays given.

    python -m scripts.bench.bench_batch                  # 20 classes, K = 12; batch delays 1 s / 10 s / 1 s
    python -m scripts.bench.bench_batch --quick          # tiny sizes and delays (CI)
    python -m scripts.bench.bench_batch --json batch.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from scripts.bench.bench_probe import SimProcess, make_inputs

MODELS = {"lmm": "gpt-4o", "llm": "gpt-4o-mini", "t2i": "gpt-image-1"}


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        _warm_up(root)
        inputs = make_inputs(root / "data", args.classes, args.per_class)
        results: dict[str, Any] = {"settings": {k: v for k, v in vars(args).items() if k not in ("json", "workdir")}}
        for mode in ("sync", "batch"):
            results[mode] = _run(root, inputs, args, mode)
        same = (root / "sync" / "manifest.jsonl").read_bytes() == (root / "batch" / "manifest.jsonl").read_bytes()
        results["same_manifest"] = same
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)
    _print(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0 if results["same_manifest"] else 1


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.bench.bench_batch", description=__doc__.split("\n")[0])
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--k", type=int, default=12, help="K_y, descriptions per class")
    p.add_argument("--per-class", type=int, default=2, help="M_y, real images per class")
    p.add_argument("--latency-ms", type=float, default=300.0, help="median synchronous latency (log-normal)")
    p.add_argument("--validating-s", type=float, default=1.0, help="simulated batch status delays")
    p.add_argument("--in-progress-s", type=float, default=10.0)
    p.add_argument("--finalizing-s", type=float, default=1.0)
    p.add_argument("--window-s", type=float, default=2.0, help="--batch-window-s of the batched run")
    p.add_argument("--poll-s", type=float, default=1.0, help="--batch-poll-s (max 5x that)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and delays (CI)")
    p.add_argument("--json", help="also write the numbers to this file")
    p.add_argument("--workdir", help="keep the run folders here (default: a temporary folder, removed)")
    args = p.parse_args(argv)
    if args.quick:
        args.classes, args.k, args.latency_ms = 3, 4, 20.0
        args.validating_s, args.in_progress_s, args.finalizing_s = 0.05, 0.2, 0.05
        args.window_s, args.poll_s = 0.05, 0.02
    return args


def _warm_up(root: Path) -> None:
    """Pay the one-time costs (importing torch / open_clip / langgraph, the first model build) untimed, so
    the first timed run is not charged for them."""
    inputs = make_inputs(root / "warm-data", 1, 1)
    warm = argparse.Namespace(k=2, classes=1, latency_ms=0.0, validating_s=0.0, in_progress_s=0.0,
                              finalizing_s=0.0, window_s=0.01, poll_s=0.01)
    _run(root / "warm", inputs, warm, "sync")


def _run(root: Path, inputs: Any, args: argparse.Namespace, mode: str) -> dict[str, Any]:
    from agent.run import main as run_main

    out = root / mode
    sim = SimProcess(median_ms=args.latency_ms)
    sim.cmd += ["--batch-validating-s", str(args.validating_s), "--batch-in-progress-s", str(args.in_progress_s),
                "--batch-finalizing-s", str(args.finalizing_s)]
    argv = ["--classes", str(inputs.tail), "--images", str(inputs.images), "--out", str(out), "--run-id", "bench",
            "--target-per-class", str(args.k), "--threshold", "-1", "--clip-model", str(inputs.clip_config),
            "--clip-pretrained", "none", "--max-classes-in-flight", str(args.classes), "--quiet"]
    with sim:
        for role, model in MODELS.items():
            # billing priced: the loopback simulator stands in for the paid API, so the price table applies
            argv += [f"--{role}-base-url", sim.base_url, f"--{role}-model", model, f"--{role}-per-minute", "1000000",
                     f"--{role}-max-in-flight", "8", f"--{role}-billing", "priced"]
        if mode == "batch":
            argv += ["--lmm-batch", "--llm-batch", "--t2i-batch", "--batch-window-s", str(args.window_s),
                     "--batch-poll-s", str(args.poll_s), "--batch-poll-max-s", str(5 * args.poll_s)]
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = run_main(argv)
        wall = time.perf_counter() - started
        stats = sim.stats()
    if code != 0:
        raise RuntimeError(f"the {mode} run exited {code}")
    return {"wall_s": round(wall, 2), **_from_traces(out), "server": _server_counts(stats)}


def _from_traces(out: Path) -> dict[str, Any]:
    conn = sqlite3.connect(f"file:{out / 'traces.sqlite'}?mode=ro", uri=True)
    try:
        rows = conn.execute('SELECT role, cost_usd, meta FROM traces WHERE cache_hit = 0').fetchall()
    finally:
        conn.close()
    by_role: dict[str, dict[str, float]] = {}
    batches = set()
    for role, cost, meta in rows:
        entry = by_role.setdefault(role, {"calls": 0, "cost_usd": 0.0})
        entry["calls"] += 1
        entry["cost_usd"] = round(entry["cost_usd"] + (cost or 0.0), 6)
        batch_id = json.loads(meta or "{}").get("batch_id")
        if batch_id:
            batches.add(batch_id)
    return {"calls": len(rows), "cost_usd": round(sum(r["cost_usd"] for r in by_role.values()), 6),
            "by_role": by_role, "batches": len(batches)}


def _server_counts(stats: dict[str, Any]) -> dict[str, int]:
    """HTTP requests the server saw: model requests (sync) and Batch API calls; lines run in batches."""
    batch = stats.get("batch", {})
    return {"sync_requests": int(stats["total"]), "batch_api_requests": sum(batch.get("requests", {}).values()),
            "batch_lines": int(batch.get("lines_run", 0)), "batches": int(batch.get("batches", 0))}


def _print(results: dict[str, Any]) -> None:
    s = results["settings"]
    print(f"## one run in both modes: {s['classes']} classes, K = {s['k']}, M_y = {s['per_class']}; simulator: "
          f"sync median {s['latency_ms']:g} ms, batch {s['validating_s']:g} / {s['in_progress_s']:g} / "
          f"{s['finalizing_s']:g} s (validating / in_progress / finalizing)")
    print("| mode | model requests | HTTP requests | batches | cost (traces) | wall |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode in ("sync", "batch"):
        r = results[mode]
        server = r["server"]
        model = server["sync_requests"] + server["batch_lines"]
        http = server["sync_requests"] + server["batch_api_requests"]
        print(f"| {mode} | {model} | {http} | {server['batches']} | ${r['cost_usd']:.4f} | {r['wall_s']:.1f} s |")
    ratio = results["batch"]["cost_usd"] / results["sync"]["cost_usd"] if results["sync"]["cost_usd"] else float("nan")
    print(f"batch / sync cost: {ratio:.3f}; same manifest: {results['same_manifest']}")


if __name__ == "__main__":
    sys.exit(main())
