"""Shared by the observe/control tests (traces, report, budget, dry run): one finished tiny run on the simulator.

The run's inputs and command line live in scripts/sim/tiny_run.py (the benchmarks use them too).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

from scripts.sim.tiny_run import make_inputs, run_args


@functools.cache
def finished_run() -> tuple[Path, dict[str, Any]]:
    """One finished tiny run, made once per test session: ``(run_dir, simulator stats)``.

    Several test modules read the same run (inspector, report, dry-run bracket): making it once keeps the
    suite fast. The folder is removed when the interpreter exits.
    """
    from agent.run import main as run_main
    from scripts.sim.server import SimConfig, Simulator

    root = Path(tempfile.mkdtemp(prefix="ltgc-observe-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    inputs = make_inputs(root)
    with Simulator(SimConfig(seed=0)) as sim:
        code = run_main(run_args(inputs, root / "run", sim.base_url))
        stats = sim.stats()
    assert code == 0, f"the tiny run failed with exit code {code}"
    return root / "run", stats
