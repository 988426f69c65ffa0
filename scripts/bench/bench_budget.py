"""How far past ``--max-cost`` a run's spend goes: the same command on a checkout, against the simulator.

    python -m scripts.bench.bench_budget                         # this checkout, caps $0.05 and $0.01
    python -m scripts.bench.bench_budget --checkout /tmp/old     # another checkout (e.g. a worktree of an older commit)

The run: 3 tail classes (1-2 real images each), K = 16, R = 0, real OpenAI model names priced by the packaged
table, ``--t2i-max-in-flight 2`` so renders queue behind the limiter, simulator latency 40 ms. Printed per
cap: exit code, spent (from traces.sqlite) as a multiple of the cap, images the simulator was asked for.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from scripts.sim.server import SimConfig, Simulator
from scripts.sim.tiny_run import make_inputs, run_args

REPO = Path(__file__).resolve().parents[2]


def measure(checkout: Path, cap: float, work: Path) -> dict[str, object]:
    inputs = make_inputs(work)
    with Simulator(SimConfig(seed=0, latency_ms=40)) as sim:
        argv = run_args(inputs, work / "run", sim.base_url, k=16, rounds=0,
                        extra=("--t2i-max-in-flight", "2", "--quiet", "--max-cost", str(cap)))
        help_text = subprocess.run([sys.executable, "-m", "agent.run", "--help"], cwd=checkout, capture_output=True,
                                   text=True, env={**os.environ, "PYTHONPATH": str(checkout)}).stdout
        if "--llm-billing" not in help_text:  # a checkout from before billing: it prices loopback anyway
            argv = [a for i, a in enumerate(argv) if not (a.endswith("-billing") or argv[i - 1].endswith("-billing"))]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(checkout)}
        done = subprocess.run([sys.executable, "-m", "agent.run", *argv], cwd=checkout, env=env,
                              capture_output=True, text=True)
        images = sim.stats()["requests"]["images"]
    conn = sqlite3.connect(work / "run" / "traces.sqlite")
    try:
        spent = float(conn.execute("SELECT SUM(cost_usd) FROM traces").fetchone()[0] or 0.0)
    finally:
        conn.close()
    summary = json.loads((work / "run" / "summary.json").read_text())
    return {"cap": cap, "exit": done.returncode, "spent": round(spent, 4), "times_cap": round(spent / cap, 2),
            "images": images, "stopped": summary["cost"]["budget"]["stopped"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.bench.bench_budget", description=__doc__.split("\n")[0])
    p.add_argument("--checkout", type=Path, default=REPO, help="the checkout whose agent.run is measured")
    p.add_argument("--caps", type=float, nargs="+", default=[0.05, 0.01])
    args = p.parse_args(argv)
    print("| cap | exit | spent | x cap | images sent | stopped |\n|---|---|---|---|---|---|")
    for cap in args.caps:
        with tempfile.TemporaryDirectory() as tmp:
            r = measure(args.checkout.resolve(), cap, Path(tmp))
        print(f"| ${cap:g} | {r['exit']} | ${r['spent']:.4f} | {r['times_cap']} | {r['images']} | {r['stopped']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
