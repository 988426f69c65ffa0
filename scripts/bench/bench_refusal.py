"""How long a run takes to refuse the calls still queued once ``--max-cost`` is reached (issue 21).

    python -m scripts.bench.bench_refusal                        # this checkout
    python -m scripts.bench.bench_refusal --checkout /tmp/old    # another checkout (e.g. an export of main)

The run: the tiny 3-class set of ``scripts/sim/tiny_run.py``, K = 16, R = 0, real OpenAI model names
priced by the packaged table, ``--t2i-max-in-flight 2``, ``--max-cost`` (default $0.05) so the cap is
reached with renders still queued; once at ``--t2i-per-minute 20`` and once unlimited. Printed per limit:
exit code, wall time of the whole command, calls refused by the budget.
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
from scripts.sim.tiny_run import make_inputs, run_args

REPO = Path(__file__).resolve().parents[2]


def measure(checkout: Path, cap: float, per_minute: str, work: Path) -> dict[str, object]:
    inputs = make_inputs(work)
    with Simulator(SimConfig(seed=0, latency_ms=40)) as sim:
        argv = run_args(inputs, work / "run", sim.base_url, k=16, rounds=0,
                        extra=("--t2i-max-in-flight", "2", "--quiet", "--max-cost", str(cap),
                               "--t2i-per-minute", per_minute))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(checkout)}
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "agent.run", *argv], cwd=checkout, env=env,
                              capture_output=True, text=True)
        wall = time.monotonic() - started
        images = sim.stats()["requests"]["images"]
    budget = json.loads((work / "run" / "summary.json").read_text())["cost"]["budget"]
    return {"exit": done.returncode, "wall_s": round(wall, 1), "refused": budget["refused"], "images": images}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.bench.bench_refusal", description=__doc__.split("\n")[0])
    p.add_argument("--checkout", type=Path, default=REPO, help="the checkout whose agent.run is measured")
    p.add_argument("--cap", type=float, default=0.05)
    args = p.parse_args(argv)
    print("| t2i per minute | exit | wall s | refused | images sent |\n|---|---|---|---|---|")
    for per_minute in ("20", "100000"):
        with tempfile.TemporaryDirectory() as tmp:
            r = measure(args.checkout.resolve(), args.cap, per_minute, Path(tmp))
        print(f"| {per_minute} | {r['exit']} | {r['wall_s']} | {r['refused']} | {r['images']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
