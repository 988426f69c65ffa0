"""The local t2i provider end to end on CPU: images, wall time, determinism, warm rerun, SIGKILL + resume.

Every run is the real command line (``python -m agent.run`` in a subprocess, start-up included) with the chat
roles on the loopback simulator (latency 0) and ``--t2i-provider diffusers`` on a tiny random pipeline that
this script saves first (scripts/sim/tiny_diffusers.py): the numbers are the agent's plumbing around a local
pipeline — queueing, batching, blob store, cache, traces, checkpoints — not an image model's speed (see
scripts/gpu_bench.sh for that on a GPU).

1. run A and run B, same inputs, two folders: wall time, images, forward passes, device seconds; the sorted
   sha256s of both manifests must be equal (determinism).
2. rerun A in its folder: wall time, t2i rows that missed the cache (must be 0), forward passes (0).
3. run C killed with SIGKILL once half of its images are cached, then ``--resume``: the manifest must equal
   A's byte for byte; images rendered twice (at most one batch in flight at the kill).

    python -m scripts.bench.bench_local_t2i                  # 10 classes, K = 20: 180 images at 64 px, batch 8
    python -m scripts.bench.bench_local_t2i --quick          # 3 classes, K = 6, 32 px (CI)
    python -m scripts.bench.bench_local_t2i --json local.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from scripts.bench.bench_probe import Inputs, SimProcess, make_inputs

ROOT = Path(__file__).resolve().parents[2]
_PASSES = re.compile(r"t2i \(diffusers .*\): (\d+) image\(s\) in (\d+) forward pass\(es\) on (.+), ([\d.]+) device-s")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-local-t2i-"))
    try:
        results = _bench(root, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _print(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    ok = results["determinism"]["same_sha256s"] and results["rerun"]["t2i_misses"] == 0 \
        and results["resume"]["manifest_equal"]
    return 0 if ok else 1


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.bench.bench_local_t2i", description=__doc__.split("\n")[0])
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--per-class", type=int, default=2, help="M_y, real images per class")
    p.add_argument("--k", type=int, default=20, help="K_y; N_y = K_y - M_y images per class")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (a multiple of 8)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--quick", action="store_true", help="3 classes, K = 6, 32 px, 2 steps, batch 4")
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args(argv)
    if args.quick:
        args.classes, args.per_class, args.k, args.size, args.steps, args.batch_size = 3, 1, 6, 32, 2, 4
    return args


def _bench(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    from scripts.sim.tiny_diffusers import build

    started = time.perf_counter()
    model = build(root / "tiny-sd")
    build_s = time.perf_counter() - started
    inputs = make_inputs(root / "inputs", args.classes, args.per_class)
    out: dict[str, Any] = {"settings": {k: v for k, v in vars(args).items() if k != "json"},
                           "pipeline_build_s": round(build_s, 2)}
    with SimProcess(median_ms=0) as sim:
        a = _run(_argv(inputs, root / "a", sim.base_url, model, args))
        b = _run(_argv(inputs, root / "b", sim.base_url, model, args))
        out["runs"] = {"a": a, "b": b}
        out["determinism"] = {"images": len(_hashes(root / "a")),
                              "same_sha256s": _hashes(root / "a") == _hashes(root / "b")}
        misses_before = _t2i_misses(root / "a")
        rerun = _run(_argv(inputs, root / "a", sim.base_url, model, args))
        out["rerun"] = {**rerun, "t2i_misses": _t2i_misses(root / "a") - misses_before}
        out["resume"] = _kill_and_resume(root, inputs, sim.base_url, model, args)
    return out


def _argv(inputs: Inputs, out: Path, base_url: str, model: Path, args: argparse.Namespace) -> list[str]:
    argv = ["--classes", str(inputs.tail), "--images", str(inputs.images), "--out", str(out), "--run-id", "bench",
            "--target-per-class", str(args.k), "--threshold", "-1", "--max-rounds", "1", "--quiet",
            "--clip-model", str(inputs.clip_config), "--clip-pretrained", "none"]
    for role in ("lmm", "llm"):
        argv += [f"--{role}-base-url", base_url, f"--{role}-model", f"sim-{role}", f"--{role}-per-minute", "1000000"]
    return [*argv, "--t2i-provider", "diffusers", "--t2i-model", str(model), "--t2i-size", f"{args.size}x{args.size}",
            "--t2i-steps", str(args.steps), "--t2i-guidance", "1.0", "--t2i-batch-size", str(args.batch_size)]


def _spawn(argv: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "agent.run", *argv], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _run(argv: list[str]) -> dict[str, Any]:
    started = time.perf_counter()
    proc = _spawn(argv)
    _, err = proc.communicate(timeout=1800)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"agent.run exited {proc.returncode}:\n{err[-2000:]}")
    match = _PASSES.search(err)
    images, passes, device, device_s = match.groups() if match else ("0", "0", "", "0")
    return {"wall_s": round(wall, 2), "images_rendered": int(images), "forward_passes": int(passes),
            "device": device, "device_s": float(device_s)}


def _kill_and_resume(root: Path, inputs: Inputs, base_url: str, model: Path, args: argparse.Namespace) -> dict[str, Any]:
    out = root / "c"
    total = len(_hashes(root / "a"))
    proc = _spawn(_argv(inputs, out, base_url, model, args))
    deadline = time.monotonic() + 1800
    while _cached(out) < total // 2:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("run C ended (or stalled) before half of its images were cached")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    cached_at_kill = _cached(out)
    resumed = _run([*_argv(inputs, out, base_url, model, args), "--resume"])
    same = (out / "manifest.jsonl").read_bytes() == (root / "a" / "manifest.jsonl").read_bytes()
    return {"cached_at_kill": cached_at_kill, "images": total, "resume": resumed, "manifest_equal": same,
            "rendered_twice": cached_at_kill + resumed["images_rendered"] - total}


def _hashes(out: Path) -> list[str]:
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    return sorted(row["sha256"] for row in rows)


def _t2i_misses(out: Path) -> int:
    with sqlite3.connect(out / "traces.sqlite") as db:
        return int(db.execute("SELECT count(*) FROM traces WHERE role = 't2i' AND cache_hit = 0").fetchone()[0])


def _cached(out: Path) -> int:
    if not (out / "cache.sqlite").exists():
        return 0
    try:
        with sqlite3.connect(f"file:{out / 'cache.sqlite'}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT count(*) FROM calls WHERE role = 't2i'").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0


def _print(res: dict[str, Any]) -> None:
    s = res["settings"]
    print(f"## local t2i on CPU: {s['classes']} classes, K={s['k']}, M_y={s['per_class']}, {s['size']} px, "
          f"{s['steps']} steps, batch {s['batch_size']} (tiny random pipeline built in {res['pipeline_build_s']} s)")
    for name, run in res["runs"].items():
        print(f"run {name}: {run['wall_s']} s wall, {run['images_rendered']} images in {run['forward_passes']} "
              f"forward passes, {run['device_s']} device-s on {run['device']}")
    d, r, k = res["determinism"], res["rerun"], res["resume"]
    print(f"determinism: {d['images']} images, same sha256s in both folders: {d['same_sha256s']}")
    print(f"rerun: {r['wall_s']} s wall, t2i cache misses {r['t2i_misses']}, forward passes {r['forward_passes']}")
    print(f"SIGKILL at {k['cached_at_kill']}/{k['images']} images cached; resume {k['resume']['wall_s']} s, "
          f"rendered {k['resume']['images_rendered']} (twice: {k['rendered_twice']}); manifest equal: "
          f"{k['manifest_equal']}")


if __name__ == "__main__":
    sys.exit(main())
