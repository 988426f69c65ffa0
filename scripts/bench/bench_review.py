"""What one review round costs on the demo's run (issue 25): requests and wall time of each phase.

The demo's data (scripts/demo.py: 3 tail classes, K = 12, threshold 0, R = 2) against the in-process
simulator at ``--latency-ms`` (default 200 ms per request), tiny random CLIP. Phases, one process, one
folder per variant:

0. ``warm-up`` — the plain run once, untimed in effect: the first run in a process pays one-off costs.
1. ``plain`` — the run without ``--review`` (the reference).
2. ``review`` — the same run with ``--review``: every class pauses before finalize (exit 4).
3. ``resume, no decision`` — ``--resume`` with nothing decided: must send 0 requests.
4. ``resume, decisions`` — ``--reject`` accepted images per class rejected (the first ones), every class
   approved: the paper's refine (1 chat request) + re-render (1 image request) per rejected image.

    python -m scripts.bench.bench_review [--latency-ms 200] [--reject 2] [--json review.json]
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from store.cli import OneLineParser


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m scripts.bench.bench_review", description=__doc__.split("\n")[0])
    p.add_argument("--latency-ms", type=float, default=200.0)
    p.add_argument("--reject", type=int, default=2, help="accepted images rejected per class (default 2)")
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args(argv)

    import agent.lifecycle.driver  # noqa: F401  (torch, open_clip, langgraph: loaded before any phase is timed)
    from agent.review.decisions import DecisionStore
    from agent.review.waiting import review_view
    from agent.run import main as agent_main
    from scripts.demo import TINY_CLIP, _make_dataset
    from scripts.sim.server import SimConfig, Simulator

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, Simulator(SimConfig(latency_ms=args.latency_ms, seed=0)) as sim:
        root = Path(tmp)
        _make_dataset(root / "data", seed=0)
        (root / "tiny-clip.json").write_text(json.dumps(TINY_CLIP), encoding="utf-8")

        def run(name: str, out: Path, *extra: str) -> int:
            argv = ["--classes", str(root / "data" / "tail.txt"), "--train-list", str(root / "data" / "train.txt"),
                    "--data-root", str(root / "data"), "--class-names", str(root / "data" / "classnames.txt"),
                    "--out", str(out), "--run-id", "bench", "--target-per-class", "12", "--max-rounds", "2",
                    "--threshold", "0.0", "--clip-model", str(root / "tiny-clip.json"), "--clip-pretrained",
                    "none", "--quiet", *extra]
            for role in ("lmm", "llm", "t2i"):
                argv += [f"--{role}-base-url", sim.base_url, f"--{role}-model", f"sim-{role}",
                         f"--{role}-per-minute", "100000", f"--{role}-max-in-flight", "16"]
            sim.reset_stats()
            started = time.monotonic()
            with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
                code = agent_main(argv)
            wall = time.monotonic() - started
            stats = sim.stats()
            rows.append({"phase": name, "exit": code, "requests": stats["total"], "by_kind": stats["by_kind"],
                         "wall_s": round(wall, 2)})
            print(f"{name:<22} exit {code}  requests {stats['total']:>4}  {dict(stats['by_kind'])}  {wall:6.2f} s",
                  flush=True)
            return code

        run("warm-up (not counted)", root / "warm")  # first-call costs: scorer build, tokenizer, kernels
        run("plain", root / "plain")
        review = root / "review"
        run("review (pause)", review, "--review")
        run("resume, no decision", review, "--resume", "--review")
        store = DecisionStore(review)
        rejected = 0
        for view in review_view(review):
            if view.payload is None:
                continue
            accepted = [i for i in view.payload["items"] if i["status"] == "accepted"][: args.reject]
            for item in accepted:
                store.reject(view.name, 0, item["index"], "bench")
            rejected += len(accepted)
            store.set_class(view.name, 0, approved=True)
        store.close()
        run(f"resume, {rejected} rejected", review, "--resume", "--review")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
