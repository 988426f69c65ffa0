"""A run against a flaky server, then ``--resume`` against a healthy one: what is lost, said, and recovered.

    python -m scripts.bench.bench_short                          # this checkout
    python -m scripts.bench.bench_short --checkout /tmp/old      # another checkout (e.g. a worktree of main)

The run (issue 21): 4 tail classes with M_y = 2 real images each, K = 12 (so 40 images to generate), the
tiny CLIP config, μ = -1 (every image that is drawn is accepted), the simulator answering HTTP 500 to 80 %
of requests, the default ``max_attempts`` (6) with a short back-off. Then the same command with
``--resume`` against a healthy simulator. Printed: exit status, manifest rows, the classes' states and
the final line of each run, and the requests the resume sent.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scripts.sim.server import SimConfig, Simulator
from scripts.sim.tiny_run import agent_argv, make_dataset

REPO = Path(__file__).resolve().parents[2]
CLASSES = {f"species {i:02d}": 2 for i in range(4)}
ROLES = ("lmm", "llm", "t2i")


def command(checkout: Path, data: Path, out: Path, base_url: str, *extra: str) -> dict[str, object]:
    argv = agent_argv(data, out, base_url, *extra, k=12)
    # Back to the default attempts (agent_argv sets 2), with back-off short enough for a benchmark.
    argv = [a for i, a in enumerate(argv) if not (a.endswith("-max-attempts") or argv[i - 1].endswith("-max-attempts"))]
    for role in ROLES:
        argv += [f"--{role}-backoff-initial-s", "0.01", f"--{role}-backoff-max-s", "0.05"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(checkout)}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "agent.run", *argv], cwd=checkout, env=env,
                          capture_output=True, text=True)
    wall = time.monotonic() - started
    lines = [ln for ln in done.stdout.splitlines() + done.stderr.splitlines() if ln.strip()]
    manifest = out / "manifest.jsonl"
    rows = len(manifest.read_text().splitlines()) if manifest.exists() else 0
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    states = {name: c.get("status") for name, c in summary.get("classes", {}).items()}
    at = max((i for i, ln in enumerate(lines) if ln.startswith("run ")), default=len(lines) - 1)
    final = " / ".join(lines[at:at + 2] if at + 1 < len(lines) and "missing" in lines[at + 1] else lines[at:at + 1])
    return {"exit": done.returncode, "rows": rows, "states": states, "final": final, "wall_s": round(wall, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.bench.bench_short", description=__doc__.split("\n")[0])
    p.add_argument("--checkout", type=Path, default=REPO, help="the checkout whose agent.run is measured")
    p.add_argument("--rate-500", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    checkout = args.checkout.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        data, out = make_dataset(Path(tmp) / "data", CLASSES), Path(tmp) / "run"
        with Simulator(SimConfig(seed=args.seed, rate_500=args.rate_500)) as sim:
            flaky = command(checkout, data, out, sim.base_url)
            flaky["requests"] = sim.stats()["total"]
        with Simulator(SimConfig(seed=args.seed)) as sim:
            healthy = command(checkout, data, out, sim.base_url, "--resume")
            healthy["requests"] = sim.stats()["total"]
    for name, r in (("flaky run", flaky), ("--resume, healthy", healthy)):
        print(f"{name}: exit {r['exit']}, {r['rows']} manifest rows, {r['requests']} requests, {r['wall_s']} s, "
              f"states {sorted(set(r['states'].values()))}")  # type: ignore[union-attr]
        print(f"  final line: {r['final']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
