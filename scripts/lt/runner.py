"""The Fashion-MNIST-LT benchmarks' training runs: settings, data, trainer command lines, runs (in parallel).

Shared by :mod:`scripts.bench.bench_fmnist_lt` (the table) and :mod:`scripts.bench.bench_fmnist_sweep` (the budget and
model-config sweeps that chose the table's defaults).

Contract
- :class:`BenchConfig` holds every setting of a benchmark; it is saved in each ``results.json``.
- :func:`prepare_data` builds the long-tailed split (``make-lt`` with ``n_max``, ``imbalance``,
  ``split_seed``), the two simulated D_g variants (filled up to ``k``) and the model-config JSON under
  ``work``.
- :func:`run_jobs` trains and evaluates a list of :class:`Job` (row, seed, output folder) with
  ``trainer.train.main``: in this process when ``jobs == 1``, else in ``jobs`` spawned worker processes
  (one torch thread each: on the 2-core machine two runs side by side use both cores). A finished run with
  the same trainer argv is reused; an interrupted one resumes from its last epoch checkpoint.
- Compute per run is ``steps`` optimizer steps of ``batch_size`` samples, split into ``epochs`` epochs
  (epochs only decide where checkpoints fall; the learning-rate schedule spans all steps).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

DEFAULT_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
GROUPS = ("overall", "many", "medium", "few")

# Tiny open_clip ViTs for 28 px grayscale images (open_clip's preprocessing repeats them to RGB). Named by
# trainable parameters (10 classes, random cosine head). BENCHMARKS.md compares them at one budget.
_TEXT_CFG = {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}
MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    # The first benchmark's model: 28 px resized to 32, 8x8 patches (16 tokens + CLS), MLP ratio 4.
    "vit-0.47m": {"image_size": 32, "layers": 4, "width": 96, "head_width": 32, "patch_size": 8},
    # 28 px at its own size, 7x7 patches (16 tokens + CLS), MLP ratio 2: no upsampling, a third of the FLOPs.
    "vit-0.32m": {"image_size": 28, "layers": 4, "width": 96, "head_width": 32, "patch_size": 7, "mlp_ratio": 2},
    "vit-0.15m": {"image_size": 28, "layers": 4, "width": 64, "head_width": 32, "patch_size": 7, "mlp_ratio": 2},
    "vit-0.07m": {"image_size": 28, "layers": 3, "width": 48, "head_width": 24, "patch_size": 7, "mlp_ratio": 2},
}
# Chosen by the model sweep (BENCHMARKS.md, "How the model and the budget were chosen"): as accurate as
# vit-0.47m at 1,500 steps for 0.73x its CPU time per image.
DEFAULT_MODEL = "vit-0.32m"
BATCH = 128
# The converged budget: the smallest budget (steps x 128) at which doubling it moves CE `all` by < 1 point.
# Not reached by the convergence sweep (vit-0.32m, seed 0): CE `all` moved +7.5, +2.4 and +3.4 points from
# 1,000 to 2,000, 2,000 to 4,000 and 4,000 to 8,000 steps. None: every budget is reported "not converged".
CONVERGED_STEPS: int | None = None
MEASURED_UP_TO = 8000  # the largest budget the convergence sweep measured
# The table's default budget: the largest budget of the sweep at which all 27 runs fit in 75 minutes on the
# 2-core machine (4,000 steps would need ~100 minutes of both cores).
DEFAULT_STEPS = 2000


def open_clip_config(name: str) -> dict[str, Any]:
    """The open_clip model config (embed_dim, vision_cfg, text_cfg) of a :data:`MODEL_CONFIGS` entry."""
    return {"embed_dim": 64, "vision_cfg": dict(MODEL_CONFIGS[name]), "text_cfg": dict(_TEXT_CFG)}


@dataclass(frozen=True)
class Row:
    """One benchmark row: a trainer mode, a loss, and which data plays D_g (None: no D_g)."""

    key: str
    title: str
    mode: str
    loss: str = "ce"
    generated: str | None = None  # "shift" | "clean" | "original"


@dataclass(frozen=True)
class BenchConfig:
    """Every setting of a benchmark run; saved in ``results.json``."""

    data_dir: Path = DEFAULT_DATA_DIR
    work: Path = Path("runs/bench-fmnist-lt")
    # The split's long-tail profile (make-lt): n_i = floor(n_max * IF^(-i/(C-1))), natural class order.
    n_max: int = 1000
    imbalance: float = 100.0
    split_seed: int = 0
    test_per_class: int | None = None  # None: the whole balanced t10k set (1,000 per class)
    k: int = 300
    many: int = 100  # group thresholds on D_o counts (paper: many > 100, few < 20)
    few: int = 20
    seeds: tuple[int, ...] = (0, 1, 2)
    model: str = DEFAULT_MODEL
    steps: int = DEFAULT_STEPS
    epochs: int = 1
    batch_size: int = BATCH
    lr: float = 1e-3
    # One torch thread and no loader workers per run: the images are cached decoded, so loading is cheap;
    # parallelism comes from --jobs (whole runs side by side), which scales better than threads here.
    threads: int = 1
    jobs: int = 1
    rows: tuple[str, ...] = ()
    trainer_args: tuple[str, ...] = ()

    @property
    def samples_per_epoch(self) -> int:
        return self.steps * self.batch_size // self.epochs

    def check(self) -> None:
        """Raise ValueError (one line, naming the option) for settings that cannot run."""
        if self.model not in MODEL_CONFIGS:
            raise ValueError(f"--model-config {self.model!r} is unknown; choose from {', '.join(MODEL_CONFIGS)}")
        for name in ("steps", "epochs", "batch_size", "jobs", "threads", "k"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.steps % self.epochs:
            raise ValueError(f"--steps {self.steps} is not a multiple of --epochs {self.epochs}")
        if not self.seeds:
            raise ValueError("--seeds needs at least one seed")

    def converged(self) -> bool:
        """Whether this run's budget reaches the measured converged budget (in samples; never when the
        convergence sweep did not reach one)."""
        return CONVERGED_STEPS is not None and self.steps * self.batch_size >= CONVERGED_STEPS * BATCH


def budget_note(cfg: BenchConfig) -> str:
    """One line on the budget: converged, or "not converged" and why."""
    budget = f"budget: {cfg.steps} steps x {cfg.batch_size} = {cfg.steps * cfg.batch_size:,} samples per run"
    if cfg.converged():
        return f"{budget} (converged budget: {CONVERGED_STEPS} x {BATCH}, BENCHMARKS.md)"
    if CONVERGED_STEPS is None:
        return (f"{budget}: not converged (no budget up to {MEASURED_UP_TO} x {BATCH} met the rule: CE `all` "
                f"still moved >= 1 point when the budget doubled; BENCHMARKS.md)")
    return (f"{budget}: not converged (below the measured converged budget of {CONVERGED_STEPS} x {BATCH}); "
            f"these numbers are not comparable with BENCHMARKS.md's table")


@dataclass(frozen=True)
class Job:
    """One training run: a row and seed, trained into ``out`` with the trainer command line ``argv``."""

    row: Row
    seed: int
    out: Path
    argv: tuple[str, ...]
    cost: float = 1.0  # relative run time, to start the longest runs first when running in parallel


def make_job(cfg: BenchConfig, data: dict[str, Any], row: Row, seed: int, out: Path) -> Job:
    """A :class:`Job` whose argv is :func:`trainer_argv` of these settings."""
    return Job(row, seed, out, tuple(trainer_argv(cfg, data, row, seed, out)), cost=float(cfg.steps))


def prepare_data(cfg: BenchConfig) -> dict[str, Any]:
    """Build the LT split, the two simulated D_g variants and the model JSON under ``cfg.work``."""
    from scripts.lt.make_lt import SplitConfig, build_split
    from scripts.lt.simulated_gen import fill_counts, write_generated
    from scripts.lt.sources import fashion_mnist

    train_src = fashion_mnist(cfg.data_dir, "train")
    split_cfg = SplitConfig(cfg.n_max, cfg.imbalance, cfg.split_seed, "natural", cfg.test_per_class)
    split = build_split(split_cfg, train_src, fashion_mnist(cfg.data_dir, "t10k"), cfg.work / "split")
    wanted = fill_counts(split.train_counts, cfg.k)
    for variant, shift in (("shift", True), ("clean", False)):
        write_generated(cfg.work / f"gen-{variant}", train_src, split.reserve, wanted, shift=shift)
    # open_clip registers a config JSON under its file stem: one file per model name.
    names = split.class_names
    return {
        "split": cfg.work / "split",
        "model": write_model_json(cfg.work, cfg.model),
        "generated": {"shift": cfg.work / "gen-shift" / "manifest.jsonl",
                      "clean": cfg.work / "gen-clean" / "manifest.jsonl",
                      "original": cfg.work / "split" / "train.txt"},
        "counts": {"train": {names[k]: v for k, v in sorted(split.train_counts.items())},
                   "generated": {names[k]: v for k, v in wanted.items()},
                   "test_images": len(split.test)},
    }


def write_model_json(folder: Path, name: str) -> Path:
    """Write the open_clip config of model ``name`` to ``folder/<name>.json`` (open_clip registers a config
    under its file stem, so each model gets its own file)."""
    path = folder / f"{name}.json"
    path.write_text(json.dumps(open_clip_config(name), indent=2) + "\n", encoding="utf-8")
    return path


def trainer_argv(cfg: BenchConfig, data: dict[str, Any], row: Row, seed: int, out: Path) -> list[str]:
    """The trainer command line of one run; identical compute settings for every row."""
    split: Path = data["split"]
    argv = [
        "--train", str(split / "train.txt"), "--test", str(split / "test.txt"),
        "--class-names", str(split / "classnames.txt"), "--data-root", str(split),
        "--out", str(out), "--model", str(data["model"]), "--pretrained", "none", "--tune", "full",
        "--head", "random",  # a random text tower gives no useful zero-shot head
        "--mode", row.mode, "--loss", row.loss, "--seed", str(seed),
        "--epochs", str(cfg.epochs), "--samples-per-epoch", str(cfg.samples_per_epoch),
        "--batch-size", str(cfg.batch_size), "--lr", str(cfg.lr),
        "--many", str(cfg.many), "--few", str(cfg.few), "--workers", "0", "--threads", str(cfg.threads),
    ]
    if row.generated is not None:
        argv += ["--generated", str(data["generated"][row.generated])]
    return argv + list(cfg.trainer_args)


def run_jobs(jobs: Sequence[Job], parallel: int = 1,
             runner: Callable[[Job], dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Run every job, ``parallel`` at a time (longest first); results in the order of ``jobs``.

    ``runner`` (default :func:`run_one`) must be a module-level function: workers are spawned processes.
    """
    run = runner or run_one
    if parallel <= 1 or len(jobs) <= 1:
        return [run(job) for job in jobs]
    order = longest_first(jobs)
    results: list[dict[str, Any]] = [{} for _ in jobs]
    # spawn, not fork: torch's thread pools do not survive a fork, and each worker sets its own threads.
    with ProcessPoolExecutor(max_workers=parallel, mp_context=get_context("spawn")) as pool:
        futures = {k: pool.submit(run, jobs[k]) for k in order}
        for k, future in futures.items():
            results[k] = future.result()
    return results


def longest_first(jobs: Sequence[Job]) -> list[int]:
    """Indices of ``jobs`` by decreasing cost (ties in input order): long runs first pack workers best."""
    return sorted(range(len(jobs)), key=lambda k: -jobs[k].cost)


def run_one(job: Job) -> dict[str, Any]:
    """Train and evaluate one job; returns its row, seed, argv, exit status, wall time and metrics.

    Re-running in the same folder reuses a finished run with the same trainer argv, resumes an interrupted
    one, and deletes a run folder left by different settings.
    """
    from trainer.train import main as train_main  # heavy (torch, open_clip): imported only when training

    out, argv = job.out, list(job.argv)
    stamp = out / "bench_argv.json"
    same = stamp.is_file() and json.loads(stamp.read_text(encoding="utf-8")) == argv
    if same and (out / "metrics.json").is_file():
        print(f"== {job.row.key} seed {job.seed}: reusing the finished run in {out}", flush=True)
        previous = json.loads(stamp.with_name("bench_run.json").read_text(encoding="utf-8"))
        return dict(previous, metrics=read_metrics(out / "metrics.json"))
    if not same and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(argv), encoding="utf-8")
    resume = ["--resume"] if (out / "checkpoints" / "last").exists() else []
    print(f"== {job.row.key} seed {job.seed}", flush=True)
    started = time.monotonic()
    try:
        status = train_main(argv + resume)
    except SystemExit as exc:  # argparse errors exit; report them as a failed run instead
        status = exc.code if isinstance(exc.code, int) else 2
    run = {"row": job.row.key, "seed": job.seed, "status": status or 0, "out": str(out),
           "wall_s": round(time.monotonic() - started, 1), "argv": argv}
    if run["status"] == 0:
        stamp.with_name("bench_run.json").write_text(json.dumps(run), encoding="utf-8")
    return dict(run, metrics=read_metrics(out / "metrics.json") if run["status"] == 0 else {})


def read_metrics(path: Path) -> dict[str, float | None]:
    """Top-1 accuracy (the trainer writes percent) overall / many / medium / few from ``metrics.json``.

    ``None`` where a group has no classes (the trainer writes null then).
    """
    raw = json.loads(path.read_text(encoding="utf-8"))
    found: dict[str, float | None] = {}
    for group in GROUPS:
        value = raw.get(group)
        if value is not None and not isinstance(value, (int, float)):
            raise ValueError(f"{path}: {group!r} is {value!r}, not a number; the trainer's metrics.json changed")
        found[group] = None if value is None else float(value)
    return found


def machine_state(commit: bool = True) -> dict[str, Any]:
    """Load average (1, 5, 15 min) and (at the start of a run: the code that runs) the checkout's git commit."""
    state: dict[str, Any] = {"load_average": [round(x, 2) for x in os.getloadavg()], "cpu_count": os.cpu_count()}
    if commit:
        state["git_commit"] = git_commit()
    return state


def git_commit() -> str | None:
    """Short hash of this checkout's HEAD, or None outside a git checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parent, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return commit or None


def jsonable(obj: Any) -> Any:
    """Paths as strings, tuples as lists, recursively: for ``json.dumps`` of configs."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return str(obj) if isinstance(obj, Path) else obj
