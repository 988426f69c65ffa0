"""Fashion-MNIST-LT: does BalanceMix's gain survive the controls a reviewer would ask for?

    python -m scripts.bench_fmnist_lt                 # the full benchmark (8 rows x 3 seeds)
    python -m scripts.bench_fmnist_lt --quick         # tiny subset, 1 epoch, 1 seed: a smoke test (< 1 min)

Data: real Fashion-MNIST (``apt-get install -y dataset-fashion-mnist``), split by make-lt with n_max = 1000,
IF = 100 (counts 1000 ... 10: 5 many, 3 medium, 2 few classes) and the balanced 10,000-image test set.

D_g is **simulated** (:mod:`scripts.lt.simulated_gen`): real training images outside the LT split, passed
through one fixed domain shift, filling each class up to K = 300 (``--k``).

Rows, all with identical compute (same ``--epochs`` and ``--samples-per-epoch``), a tiny ViT trained from
scratch (``--tune full``, :data:`MODEL_CONFIG`):

    ce, logit_adjust      no D_g, instance sampling, CE / logit-adjusted loss (Menon et al.)
    plain ... balancemix  the paper's Table 4 modes with the shifted D_g
    balancemix_clean      D_g without the shift (an ideal generator)
    balancemix_do         x_j partners drawn from D_o (D_o passed as --generated): mixing, no generated data

Each row runs ``trainer.train.main(argv)`` once per seed; the table reports mean ± sample std (n-1) over
seeds of top-1 accuracy (%) overall / many / medium / few. Outputs in ``--work``: ``results.md``,
``results.json`` (every run's metrics, argv and wall time), the split, D_g and each run's folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

DEFAULT_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = "apt-get install -y dataset-fashion-mnist"
GROUPS = ("overall", "many", "medium", "few")

# A tiny open_clip ViT for 28 px grayscale images resized to 32 px and repeated to RGB by open_clip's
# preprocessing: 8x8 patches give 16 tokens + CLS; ~0.47 M parameters. Patch 4 (64 tokens) measured ~3x slower
# per image on the 2-core machine, too slow for 24 runs in 40 minutes.
MODEL_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 4, "width": 96, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


@dataclass(frozen=True)
class Row:
    """One benchmark row: a trainer mode, a loss, and which data plays D_g (None: no D_g)."""

    key: str
    title: str
    mode: str
    loss: str = "ce"
    generated: str | None = None  # "shift" | "clean" | "original"


ROWS = (
    Row("ce", "no D_g (CE)", "plain"),
    Row("logit_adjust", "no D_g (logit-adjust)", "plain", loss="logit-adjust"),
    Row("plain", "plain", "plain", generated="shift"),
    Row("balanced", "balanced", "balanced", generated="shift"),
    Row("mixup", "mixup", "mixup", generated="shift"),
    Row("balancemix", "balancemix", "balancemix", generated="shift"),
    Row("balancemix_clean", "balancemix, D_g without shift", "balancemix", generated="clean"),
    Row("balancemix_do", "balancemix, x_j from D_o", "balancemix", generated="original"),
)


@dataclass(frozen=True)
class BenchConfig:
    """Every setting of a benchmark run; saved in ``results.json``."""

    data_dir: Path = DEFAULT_DATA_DIR
    work: Path = Path("runs/bench-fmnist-lt")
    n_max: int = 1000
    imbalance: float = 100.0
    test_per_class: int | None = None  # None: the whole balanced t10k set (1,000 per class)
    k: int = 300
    many: int = 100  # group thresholds on D_o counts (paper: many > 100, few < 20)
    few: int = 20
    split_seed: int = 0
    seeds: tuple[int, ...] = (0, 1, 2)
    # 4 x 2,048 samples per run: sized so 24 runs fit in 40 minutes on a shared 2-core machine.
    epochs: int = 4
    samples_per_epoch: int = 2048
    batch_size: int = 128
    lr: float = 1e-3
    # One torch thread and no loader workers: the images are cached decoded, so data loading is cheap, and
    # one thread leaves a core to the machine's other users (use --threads 2 on an idle machine).
    threads: int = 1
    rows: tuple[str, ...] = tuple(r.key for r in ROWS)
    trainer_args: tuple[str, ...] = ()


# --quick: a tiny subset that still has many/medium/few classes (counts 40 ... 4), 1 epoch, 1 seed.
# Thresholds scaled with n_max so all three groups stay populated: 3 many (> 20), 4 medium, 3 few (< 8).
QUICK = dict(n_max=40, imbalance=10.0, test_per_class=10, k=20, many=20, few=8, seeds=(0,), epochs=1,
             samples_per_epoch=128, batch_size=32)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit status 0, or 2 with one line when the dataset or a setting is unusable."""
    cfg = _config_from_args(_parser().parse_args(argv))
    missing = [f for f in _IDX_FILES if not (cfg.data_dir / f).is_file()]
    if missing:
        print(f"bench_fmnist_lt: error: Fashion-MNIST not found in {cfg.data_dir} (no {missing[0]}); "
              f"install it with: {INSTALL_HINT}", file=sys.stderr)
        return 2
    from scripts.lt.profile import ProfileError
    from scripts.lt.sources import SourceError

    started = time.monotonic()
    try:
        data = prepare_data(cfg)
    except (ProfileError, SourceError, ValueError) as exc:
        print(f"bench_fmnist_lt: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"bench_fmnist_lt: error: cannot write {exc.filename or cfg.work}: {exc.strerror or exc}; "
              "check --work", file=sys.stderr)
        return 2
    runs: list[dict[str, Any]] = []
    for row in (r for r in ROWS if r.key in cfg.rows):
        for seed in cfg.seeds:
            run = run_one(cfg, data, row, seed)
            if run["status"] != 0:
                print(f"bench_fmnist_lt: error: row {row.key} seed {seed} failed (trainer exit {run['status']}); "
                      f"see {run['out']}", file=sys.stderr)
                return 1
            runs.append(run)
    table = aggregate(runs)
    results = {"config": _jsonable(asdict(cfg)), "model_config": MODEL_CONFIG, "data": data["counts"],
               "wall_s": round(time.monotonic() - started, 1), "table": table, "runs": runs}
    (cfg.work / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    markdown = format_table(table, len(cfg.seeds))
    (cfg.work / "results.md").write_text(markdown + "\n", encoding="utf-8")
    print(markdown)
    print(f"\n{len(runs)} runs in {results['wall_s']} s; results in {cfg.work}/results.{{md,json}}")
    return 0


def prepare_data(cfg: BenchConfig) -> dict[str, Any]:
    """Build the LT split and the two simulated D_g variants under ``cfg.work``; returns their paths."""
    from scripts.lt.make_lt import SplitConfig, build_split
    from scripts.lt.simulated_gen import fill_counts, write_generated
    from scripts.lt.sources import fashion_mnist

    train_src = fashion_mnist(cfg.data_dir, "train")
    split_cfg = SplitConfig(cfg.n_max, cfg.imbalance, cfg.split_seed, "natural", cfg.test_per_class)
    split = build_split(split_cfg, train_src, fashion_mnist(cfg.data_dir, "t10k"), cfg.work / "split")
    wanted = fill_counts(split.train_counts, cfg.k)
    for variant, shift in (("shift", True), ("clean", False)):
        write_generated(cfg.work / f"gen-{variant}", train_src, split.reserve, wanted, shift=shift)
    model_json = cfg.work / "tiny-vit.json"
    model_json.write_text(json.dumps(MODEL_CONFIG, indent=2) + "\n", encoding="utf-8")
    names = split.class_names
    return {
        "split": cfg.work / "split",
        "model": model_json,
        "generated": {"shift": cfg.work / "gen-shift" / "manifest.jsonl",
                      "clean": cfg.work / "gen-clean" / "manifest.jsonl",
                      "original": cfg.work / "split" / "train.txt"},
        "counts": {"train": {names[k]: v for k, v in sorted(split.train_counts.items())},
                   "generated": {names[k]: v for k, v in wanted.items()},
                   "test_images": len(split.test)},
    }


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


def run_one(cfg: BenchConfig, data: dict[str, Any], row: Row, seed: int) -> dict[str, Any]:
    """Train and evaluate one (row, seed); returns its argv, exit status, wall time and metrics.

    Re-running the benchmark in the same ``--work`` reuses a finished run with the same trainer argv,
    resumes an interrupted one, and deletes a run folder left by different settings.
    """
    from trainer.train import main as train_main  # heavy (torch, open_clip): imported only when training

    out = cfg.work / "runs" / row.key / f"seed{seed}"
    argv = trainer_argv(cfg, data, row, seed, out)
    stamp = out / "bench_argv.json"
    same = stamp.is_file() and json.loads(stamp.read_text(encoding="utf-8")) == argv
    if same and (out / "metrics.json").is_file():
        print(f"== {row.key} seed {seed}: reusing the finished run in {out}", flush=True)
        previous = json.loads(stamp.with_name("bench_run.json").read_text(encoding="utf-8"))
        return dict(previous, metrics=read_metrics(out / "metrics.json"))
    if not same and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(argv), encoding="utf-8")
    resume = ["--resume"] if (out / "checkpoints" / "last").exists() else []
    print(f"== {row.key} seed {seed}", flush=True)
    started = time.monotonic()
    try:
        status = train_main(argv + resume)
    except SystemExit as exc:  # argparse errors exit; report them as a failed run instead
        status = exc.code if isinstance(exc.code, int) else 2
    run = {"row": row.key, "seed": seed, "status": status or 0, "out": str(out),
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


def aggregate(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per row, mean and sample std (n-1; 0 for one seed) of each group over seeds, in ``ROWS`` order.

    >>> runs = [{"row": "ce", "metrics": {g: v for g in GROUPS}} for v in (50.0, 52.0)]
    >>> aggregate(runs)[0]["overall"]
    {'mean': 51.0, 'std': 1.41}
    """
    table: list[dict[str, Any]] = []
    for row in ROWS:
        mine = [r["metrics"] for r in runs if r["row"] == row.key]
        if not mine:
            continue
        entry: dict[str, Any] = {"row": row.key, "title": row.title, "seeds": len(mine)}
        for group in GROUPS:
            values = [m[group] for m in mine if m[group] is not None]
            if not values:
                entry[group] = None
                continue
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            entry[group] = {"mean": round(statistics.fmean(values), 2), "std": round(std, 2)}
        table.append(entry)
    return table


def format_table(table: Sequence[dict[str, Any]], seeds: int) -> str:
    """The markdown table: one line per row, ``mean ± std`` per group."""
    head = f"| row ({seeds} seed{'s' if seeds != 1 else ''}) | all | many | medium | few |"
    lines = [head, "|---|---|---|---|---|"]
    for entry in table:
        cells = [f"{entry[g]['mean']:.2f} ± {entry[g]['std']:.2f}" if entry[g] else "n/a" for g in GROUPS]
        lines.append(f"| {entry['title']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


_IDX_FILES = tuple(f"{part}-{kind}-ubyte.gz" for part in ("train", "t10k")
                   for kind in ("images-idx3", "labels-idx1"))


def _config_from_args(args: argparse.Namespace) -> BenchConfig:
    cfg = BenchConfig(data_dir=args.data_dir, work=args.work)
    if args.quick:
        cfg = replace(cfg, **QUICK)  # type: ignore[arg-type]
    overrides = {name: getattr(args, name) for name in ("k", "epochs", "samples_per_epoch", "batch_size", "lr", "threads")
                 if getattr(args, name) is not None}
    if args.seeds is not None:
        overrides["seeds"] = tuple(args.seeds)
    if args.rows is not None:
        overrides["rows"] = tuple(args.rows)
    return replace(cfg, trainer_args=tuple(args.trainer_arg), **overrides)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return str(obj) if isinstance(obj, Path) else obj


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m scripts.bench_fmnist_lt",
                                description="Fashion-MNIST-LT benchmark of BalanceMix and its controls.")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help=f"Fashion-MNIST IDX files ({INSTALL_HINT})")
    p.add_argument("--work", type=Path, default=Path("runs/bench-fmnist-lt"), help="output folder")
    p.add_argument("--quick", action="store_true", help="tiny subset, 1 epoch, 1 seed: a smoke test")
    p.add_argument("--k", type=int, default=None, help="fill each class with D_g up to K images (default 300)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default 0 1 2)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (same for every row)")
    p.add_argument("--samples-per-epoch", type=int, default=None, help="training samples per epoch (every row)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per run (default 1)")
    p.add_argument("--rows", nargs="+", choices=[r.key for r in ROWS], default=None, help="run only these rows")
    p.add_argument("--trainer-arg", action="append", default=[], metavar="ARG",
                   help="extra argument passed to every trainer run (repeatable), e.g. --trainer-arg=--la-tau=1.0")
    return p


if __name__ == "__main__":
    raise SystemExit(main())
