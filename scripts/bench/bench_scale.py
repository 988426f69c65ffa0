"""The driver against the number of classes: memory, speed and store size at N = 10^3 .. 10^4 (issue 23).

For each size ``NxK`` (N classes, K images per class) this runs the real command line, ``python -m
agent.run``, in a subprocess of its own (so its peak RSS is its own, read with ``os.wait4``) against
``scripts.simulator`` at latency 0, with the tiny random CLIP config as the scorer, threshold -1 (every
image accepted: the call count is fixed by N and K) and two real 32x32 images per class:

1. **cold** — a fresh folder. requests/s (simulator requests / the run's own ``wall_s``), driver CPU ms
   per call (the subprocess's user + system CPU, less that of a 1-class run at the same K, over the calls
   it adds: start-up and the CLIP load cancel), peak RSS, bytes per call of traces.sqlite, cache.sqlite and
   checkpoints.sqlite, summary.json bytes, the report's index bytes.
2. **warm** — the same command again into the same folder (a fresh run: every unchanged complete class is
   reused as it is, agent/lifecycle/reuse.py): ms per class of its ``wall_s``, and its peak RSS; then
   **replay** — the same with ``--replay`` (every class restarts at describe, every call a cache hit, no
   request): ms per class.
3. **resume** — ``--resume`` on the finished folder (every class complete): the process's wall time from
   start to exit, imports included, and its in-run ``wall_s``.
4. **summary** — ``python -m agent.traces RUN summary`` and ``... export --format jsonl``: each process's wall
   time (on the folder after all of the above: the replay added a row per call), and traces.sqlite's bytes
   after the replay.

    python -m scripts.bench.bench_scale --sizes 1000x10,3000x10,10000x10,300x300 --json scale.json
    python -m scripts.bench.bench_scale --sizes 3x4 --root /tmp/s   # the quick variant (tests/scripts)
    python -m scripts.bench.bench_scale --sizes 3x4 --root /tmp/s --again   # warm phases again, this code
    python -m scripts.bench.bench_scale --repo ../other-checkout ... # the same runs on another commit's code

Run the big sizes once, in the background with ``nice``: 10^4 classes at K = 10 is ~1.3x10^5 requests.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scripts.bench.bench_probe import SimProcess, make_inputs

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Proc:
    """One finished subprocess: wall seconds, CPU seconds (user + system), peak RSS MiB, exit code."""

    wall_s: float
    cpu_s: float
    rss_mib: float
    code: int
    tail: str


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.bench.bench_scale", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000x10,3000x10", help="comma-separated NxK (classes x images per class)")
    p.add_argument("--root", type=Path, default=None, help="work folder (default: a temp folder, removed)")
    p.add_argument("--repo", type=Path, default=REPO, help="checkout whose code runs (default: this one)")
    p.add_argument("--classes-in-flight", type=int, default=16)
    p.add_argument("--no-baseline", action="store_true", help="skip the 1-class run (no CPU ms per call)")
    p.add_argument("--json", type=Path, default=None, help="also write every number here")
    p.add_argument("--again", action="store_true",
                   help="only the warm phases, on the finished folders an earlier run left in --root")
    args = p.parse_args(argv)
    try:
        sizes = [tuple(int(x) for x in s.lower().split("x")) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        p.error("--sizes: use NxK,NxK (e.g. 1000x10,300x300)")
    if not sizes or any(len(s) != 2 or min(s) < 1 for s in sizes):
        p.error("--sizes: use NxK,NxK with N, K >= 1")
    if args.again and args.root is None:
        p.error("--again needs the --root of an earlier run")
    root = args.root or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"repo": str(args.repo.resolve()), "commit": _commit(args.repo), "sizes": []}
    baselines: dict[int, tuple[Proc, int]] = {}
    try:
        for n, k in sizes:
            if args.again:
                results["sizes"].append(_again(root / f"n{n}-k{k}", n, k, args))
                continue
            if k not in baselines and not args.no_baseline:  # the 1-class run at this K: start-up, model load
                base = _measure(root / f"base-k{k}", 1, k, args, phases=False)
                baselines[k] = (base["cold_proc"], base["calls"])
            row = _measure(root / f"n{n}-k{k}", n, k, args, phases=True)
            row["driver_cpu_ms_per_call"] = None
            if k in baselines:
                base_proc, base_calls = baselines[k]
                row["driver_cpu_ms_per_call"] = round(
                    1000 * (row["cold_proc"].cpu_s - base_proc.cpu_s) / max(1, row["calls"] - base_calls), 3)
            results["sizes"].append(row)
            _print_row(row)
            sys.stdout.flush()
    finally:
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=_plain) + "\n", encoding="utf-8")
    return 0


def _again(folder: Path, n: int, k: int, args: argparse.Namespace) -> dict[str, Any]:
    """``--again``: the warm phases only, on the finished folder an earlier run of this script left in
    ``--root``: a ``--replay`` first (this code's keys replace the old code's), then the warm rerun."""
    out = folder / "run"
    if not (out / "summary.json").is_file():
        raise SystemExit(f"--again: {out} holds no finished run; run without --again first (same --root)")
    inputs = argparse.Namespace(tail=folder / "inputs" / "tail.txt", images=folder / "inputs" / "images",
                                clip_config=folder / "inputs" / "tiny-clip.json")
    row: dict[str, Any] = {"classes": n, "k": k}
    with SimProcess(median_ms=0) as sim:
        argv = _agent_argv(inputs, out, sim.base_url, k, args.classes_in_flight)
        replay = _run([*argv, "--replay"], args.repo)
        replay_s = json.loads((out / "summary.json").read_text(encoding="utf-8"))["wall_s"]
        warm = _run(argv, args.repo)
        warm_s = json.loads((out / "summary.json").read_text(encoding="utf-8"))["wall_s"]
        row.update(replay_proc=replay, replay_ms_per_class=round(1000 * replay_s / n, 2), warm_proc=warm,
                   warm_ms_per_class=round(1000 * warm_s / n, 2), requests=int(sim.stats()["total"]))
    print(f"N={n} K={k} again: --replay {row['replay_ms_per_class']} ms/class, warm {row['warm_ms_per_class']} "
          f"ms/class (peak RSS {warm.rss_mib} MiB), {row['requests']} requests")
    return row


def _measure(folder: Path, n: int, k: int, args: argparse.Namespace, *, phases: bool) -> dict[str, Any]:
    inputs = make_inputs(folder / "inputs", n, 2)
    out = folder / "run"
    shutil.rmtree(out, ignore_errors=True)
    row: dict[str, Any] = {"classes": n, "k": k}
    with SimProcess(median_ms=0) as sim:
        argv = _agent_argv(inputs, out, sim.base_url, k, args.classes_in_flight)
        cold = _run(argv, args.repo)
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        requests = int(sim.stats()["total"])
        calls = int(summary["totals"]["run"]["calls"])
        row.update(cold_proc=cold, calls=calls, requests=requests, cold_wall_s=summary["wall_s"],
                   requests_per_s=round(requests / summary["wall_s"], 1))
        stores = {name: _db_bytes(out / f"{name}.sqlite") for name in ("traces", "cache", "checkpoints")}
        row["store_bytes"] = stores
        row["store_bytes_per_call"] = {name: round(b / max(1, calls)) for name, b in stores.items()}
        row["summary_json_bytes"] = (out / "summary.json").stat().st_size
        row["report_index_bytes"] = _size(out / "report.html")
        if not phases:
            return row
        warm = _run(argv, args.repo)
        warm_summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        row.update(warm_proc=warm, warm_wall_s=warm_summary["wall_s"],
                   warm_requests=int(sim.stats()["total"]) - requests,
                   warm_ms_per_class=round(1000 * warm_summary["wall_s"] / n, 2))
        replay = _run([*argv, "--replay"], args.repo)
        replay_summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        row.update(replay_proc=replay, replay_wall_s=replay_summary["wall_s"],
                   replay_requests=int(sim.stats()["total"]) - requests - row["warm_requests"],
                   replay_ms_per_class=round(1000 * replay_summary["wall_s"] / n, 2),
                   replay_traces_bytes=_db_bytes(out / "traces.sqlite"))  # + every replayed call's row (a hit)
        resume = _run([*argv, "--resume"], args.repo)
        row.update(resume_proc=resume,
                   resume_wall_s=json.loads((out / "summary.json").read_text(encoding="utf-8"))["wall_s"])
        row["traces_summary_proc"] = _run(["-m", "agent.traces", str(out), "summary"], args.repo, check_out=True)
        row["traces_export_proc"] = _run(["-m", "agent.traces", str(out), "export", "--format", "jsonl"], args.repo)
    return row


def _agent_argv(inputs: Any, out: Path, base_url: str, k: int, in_flight: int) -> list[str]:
    argv = ["-m", "agent.run", "--classes", str(inputs.tail), "--images", str(inputs.images), "--out", str(out),
            "--run-id", "scale", "--target-per-class", str(k), "--threshold", "-1", "--max-rounds", "1",
            "--clip-model", str(inputs.clip_config), "--clip-pretrained", "none", "--quiet",
            "--max-classes-in-flight", str(in_flight)]
    for role in ("lmm", "llm", "t2i"):
        argv += [f"--{role}-base-url", base_url, f"--{role}-model", f"sim-{role}",
                 f"--{role}-max-in-flight", "64", f"--{role}-per-minute", "1000000"]
    return argv


def _run(argv: list[str], repo: Path, *, check_out: bool = False) -> Proc:
    """``python ARGV`` in ``repo``; its own wall, CPU and peak RSS (``os.wait4``: this child only)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(repo.resolve())}
    start = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([sys.executable, *argv], cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        log.seek(0)
        tail = log.read()[-3000:].decode("utf-8", "replace")
    if proc.returncode != 0:
        raise RuntimeError(f"python {' '.join(argv[:2])} exited {proc.returncode}:\n{tail}")
    return Proc(round(wall, 3), round(usage.ru_utime + usage.ru_stime, 3), round(usage.ru_maxrss / 1024, 1),
                proc.returncode, tail if check_out else "")


def _db_bytes(path: Path) -> int:
    """A SQLite database's bytes on disk, its write-ahead log included."""
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def _size(path: Path) -> int | None:
    return path.stat().st_size if path.is_file() else None


def _commit(repo: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def _plain(value: Any) -> Any:
    return asdict(value) if isinstance(value, Proc) else str(value)


def _print_row(r: dict[str, Any]) -> None:
    per_call = r["store_bytes_per_call"]
    print(f"N={r['classes']} K={r['k']}: {r['requests']} requests, cold {r['cold_wall_s']} s "
          f"({r['requests_per_s']} req/s), driver CPU {r['driver_cpu_ms_per_call']} ms/call, peak RSS "
          f"{r['cold_proc'].rss_mib} MiB (warm {r['warm_proc'].rss_mib}); per call: traces {per_call['traces']} B, "
          f"cache {per_call['cache']} B, checkpoints {per_call['checkpoints']} B; warm {r['warm_ms_per_class']} "
          f"ms/class ({r['warm_requests']} requests), --replay {r['replay_ms_per_class']} ms/class "
          f"({r['replay_requests']} requests); --resume {r['resume_proc'].wall_s} s; traces summary "
          f"{r['traces_summary_proc'].wall_s} s, export jsonl {r['traces_export_proc'].wall_s} s; traces.sqlite "
          f"after the replay {r['replay_traces_bytes']} B; summary.json {r['summary_json_bytes']} B; "
          f"report.html {r['report_index_bytes']} B")


if __name__ == "__main__":
    raise SystemExit(main())
