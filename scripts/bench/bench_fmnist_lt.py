"""Fashion-MNIST-LT: does BalanceMix's gain survive the controls a reviewer would ask for?

    python -m scripts.bench.bench_fmnist_lt --jobs 2        # the full benchmark (9 rows x 3 seeds), both cores
    python -m scripts.bench.bench_fmnist_lt --quick         # tiny subset, 4 steps, 1 seed: a smoke test (< 1 min)

Data: real Fashion-MNIST (``apt-get install -y dataset-fashion-mnist``), split by make-lt (``--n-max``,
``--imbalance``, ``--split-seed``; default 1000 / 100 / 0: counts 1000 ... 10, 5 many, 3 medium, 2 few
classes) and the balanced 10,000-image test set.

D_g is **simulated** (:mod:`scripts.lt.simulated_gen`): real training images outside the LT split, passed
through one fixed domain shift, filling each class up to K = 300 (``--k``).

Rows, all with identical compute (``--steps`` optimizer steps of ``--batch-size``), a tiny ViT trained from
scratch (``--tune full``, ``--model-config``, :data:`scripts.lt.runner.MODEL_CONFIGS`):

    ce, logit_adjust      no D_g, instance sampling, CE / logit-adjusted loss (Menon et al.)
    plain ... balancemix  the paper's Table 4 modes with the shifted D_g
    balancemix_clean      D_g without the shift (an ideal generator)
    balancemix_do         x_j partners drawn from D_o (D_o passed as --generated): mixing, no generated data
    balancemix_la         BalanceMix with the logit-adjusted loss, prior = the label prior BalanceMix's
                          sampler produces (trainer.losses.sampler_prior): not in the paper

Each row runs ``trainer.train.main(argv)`` once per seed; the table reports mean ± sample std (n-1) over
seeds of top-1 accuracy (%) overall / many / medium / few. A budget below the measured converged budget
(:data:`scripts.lt.runner.CONVERGED_STEPS` x 128 samples; none was reached up to 8,000 steps, so today every
budget is) is flagged "not converged" in the output.
Outputs in ``--work``: ``results.md``, ``results.json`` (settings, every run's metrics, argv and wall time,
load average and git commit), the split, D_g and each run's folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from scripts.lt import runner
from scripts.lt.runner import (
    BATCH,
    DEFAULT_DATA_DIR,
    DEFAULT_MODEL,
    DEFAULT_STEPS,
    GROUPS,
    MODEL_CONFIGS,
    BenchConfig,
    Row,
    budget_note,
    jsonable,
    machine_state,
    make_job,
    open_clip_config,
    prepare_data,
    read_metrics,
    run_jobs,
    trainer_argv,
)

__all__ = ["GROUPS", "QUICK", "ROWS", "BenchConfig", "aggregate", "budget_note", "format_table", "main",
           "prepare_data", "read_metrics", "trainer_argv"]

INSTALL_HINT = "apt-get install -y dataset-fashion-mnist"

ROWS = (
    Row("ce", "no D_g (CE)", "plain"),
    Row("logit_adjust", "no D_g (logit-adjust)", "plain", loss="logit-adjust"),
    Row("plain", "plain", "plain", generated="shift"),
    Row("balanced", "balanced", "balanced", generated="shift"),
    Row("mixup", "mixup", "mixup", generated="shift"),
    Row("balancemix", "balancemix", "balancemix", generated="shift"),
    Row("balancemix_clean", "balancemix, D_g without shift", "balancemix", generated="clean"),
    Row("balancemix_do", "balancemix, x_j from D_o", "balancemix", generated="original"),
    Row("balancemix_la", "balancemix + logit-adjust (sampler prior)", "balancemix", loss="logit-adjust",
        generated="shift"),
)

# --quick: a tiny subset that still has many/medium/few classes (counts 40 ... 4), 4 steps, 1 seed.
# Thresholds scaled with n_max so all three groups stay populated: 3 many (> 20), 4 medium, 3 few (< 8).
QUICK: dict[str, Any] = dict(n_max=40, imbalance=10.0, test_per_class=10, k=20, many=20, few=8, seeds=(0,),
                             steps=4, epochs=1, batch_size=32)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit status 0, or 2 with one line when the dataset or a setting is unusable."""
    try:
        cfg = _config_from_args(_parser().parse_args(argv))
        cfg.check()
    except ValueError as exc:
        print(f"bench_fmnist_lt: error: {exc}", file=sys.stderr)
        return 2
    missing = [f for f in _IDX_FILES if not (cfg.data_dir / f).is_file()]
    if missing:
        print(f"bench_fmnist_lt: error: Fashion-MNIST not found in {cfg.data_dir} (no {missing[0]}); "
              f"install it with: {INSTALL_HINT}", file=sys.stderr)
        return 2
    started, before = time.monotonic(), machine_state()
    data = prepare_or_report(cfg)
    if data is None:
        return 2
    rows = [r for r in ROWS if r.key in cfg.rows]
    jobs = [make_job(cfg, data, row, seed, cfg.work / "runs" / row.key / f"seed{seed}")
            for row in rows for seed in cfg.seeds]
    runs = run_jobs(jobs, cfg.jobs)
    failed = [r for r in runs if r["status"] != 0]
    if failed:
        bad = failed[0]
        print(f"bench_fmnist_lt: error: row {bad['row']} seed {bad['seed']} failed (trainer exit "
              f"{bad['status']}); see {bad['out']}", file=sys.stderr)
        return 1
    table = aggregate(runs)
    note = budget_note(cfg)
    results = {"config": jsonable(asdict(cfg)), "model_config": open_clip_config(cfg.model),
               "budget": {"steps": cfg.steps, "batch_size": cfg.batch_size,
                          "converged_steps": runner.CONVERGED_STEPS, "measured_up_to": runner.MEASURED_UP_TO,
                          "converged": cfg.converged(), "note": note},
               "data": data["counts"], "wall_s": round(time.monotonic() - started, 1),
               "machine": {"start": before, "end": machine_state(commit=False)}, "table": table, "runs": runs}
    judged = verdict(table)
    results["verdict"] = judged
    markdown = format_table(table, len(cfg.seeds))
    if judged is not None:
        markdown += "\n\n" + format_verdict(judged)
    (cfg.work / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (cfg.work / "results.md").write_text(markdown + "\n\n" + note + "\n", encoding="utf-8")
    print(markdown)
    print(f"\n{note}")
    print(f"{len(runs)} runs in {results['wall_s']} s (load average {before['load_average']} at start, "
          f"{results['machine']['end']['load_average']} at end); results in {cfg.work}/results.{{md,json}}")
    return 0


def prepare_or_report(cfg: BenchConfig) -> dict[str, Any] | None:
    """:func:`prepare_data`, with unusable settings or an unwritable folder as one ``error:`` line (None)."""
    from scripts.lt.profile import ProfileError
    from scripts.lt.sources import SourceError

    try:
        return prepare_data(cfg)
    except (ProfileError, SourceError, ValueError) as exc:
        print(f"bench_fmnist_lt: error: {exc}", file=sys.stderr)
    except OSError as exc:
        print(f"bench_fmnist_lt: error: cannot write {exc.filename or cfg.work}: {exc.strerror or exc}; "
              "check --work", file=sys.stderr)
    return None


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


# The question the new row asks (issue 13): better than both of these, on these groups, by more than one std?
CHALLENGER, RIVALS, VERDICT_GROUPS = "balancemix_la", ("balancemix", "logit_adjust"), ("overall", "few")


def verdict(table: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Does :data:`CHALLENGER` beat every row in :data:`RIVALS` on every group in :data:`VERDICT_GROUPS` by
    more than one standard deviation (the larger of the two rows' sample stds)? None when a row is missing or
    has fewer than 2 seeds (no std to judge by).

    >>> t = [{"row": "balancemix_la", "seeds": 3, "overall": {"mean": 80.0, "std": 0.5}, "few": {"mean": 70.0, "std": 2.0}},
    ...      {"row": "balancemix", "seeds": 3, "overall": {"mean": 78.0, "std": 1.0}, "few": {"mean": 69.0, "std": 1.0}},
    ...      {"row": "logit_adjust", "seeds": 3, "overall": {"mean": 75.0, "std": 1.0}, "few": {"mean": 60.0, "std": 3.0}}]
    >>> v = verdict(t)
    >>> v["beats_all"], [(c["rival"], c["group"], c["beats"]) for c in v["comparisons"] if not c["beats"]]
    (False, [('balancemix', 'few', False)])
    """
    rows = {e["row"]: e for e in table}
    if any(r not in rows or rows[r]["seeds"] < 2 for r in (CHALLENGER, *RIVALS)):
        return None
    comparisons = []
    for rival in RIVALS:
        for group in VERDICT_GROUPS:
            mine, theirs = rows[CHALLENGER][group], rows[rival][group]
            if mine is None or theirs is None:
                return None
            delta = round(mine["mean"] - theirs["mean"], 2)
            margin = max(mine["std"], theirs["std"])
            comparisons.append({"rival": rival, "group": group, "delta": delta, "std": margin,
                                "beats": delta > margin})
    return {"challenger": CHALLENGER, "beats_all": all(c["beats"] for c in comparisons), "comparisons": comparisons}


def format_verdict(v: dict[str, Any]) -> str:
    """One line per comparison, and the answer."""
    lines = [f"{v['challenger']} vs {c['rival']} on {'all' if c['group'] == 'overall' else c['group']}: "
             f"{c['delta']:+.2f} points (larger std {c['std']:.2f}): "
             f"{'better by more than one std' if c['beats'] else 'NOT better by more than one std'}"
             for c in v["comparisons"]]
    answer = "yes" if v["beats_all"] else "no"
    return "\n".join([*lines, f"beats both on all and few by more than one std: {answer}"])


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

# Options copied onto BenchConfig when given (argparse dest == field name).
_OVERRIDES = ("n_max", "imbalance", "split_seed", "k", "model", "steps", "epochs", "batch_size", "lr", "threads",
              "jobs")


def _config_from_args(args: argparse.Namespace) -> BenchConfig:
    cfg = BenchConfig(data_dir=args.data_dir, work=args.work, rows=tuple(r.key for r in ROWS))
    if args.quick:
        cfg = replace(cfg, **QUICK)
    overrides: dict[str, Any] = {name: getattr(args, name) for name in _OVERRIDES if getattr(args, name) is not None}
    if args.seeds is not None:
        overrides["seeds"] = tuple(args.seeds)
    if args.rows is not None:
        overrides["rows"] = tuple(args.rows)
    return replace(cfg, trainer_args=tuple(args.trainer_arg), **overrides)


def add_common_options(p: argparse.ArgumentParser) -> None:
    """Options shared with :mod:`scripts.bench.bench_fmnist_sweep`: data, split profile, budget, parallelism."""
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help=f"Fashion-MNIST IDX files ({INSTALL_HINT})")
    p.add_argument("--n-max", type=int, default=None, help="split: images of the largest class (default 1000)")
    p.add_argument("--imbalance", type=float, default=None, help="split: n_max / n_min (default 100)")
    p.add_argument("--split-seed", type=int, default=None, help="split: seed of the image selection (default 0)")
    p.add_argument("--k", type=int, default=None, help="fill each class with D_g up to K images (default 300)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default 0 1 2)")
    p.add_argument("--epochs", type=int, default=None, help="epochs the steps are split into (default 1)")
    p.add_argument("--batch-size", type=int, default=None, help=f"default {BATCH}")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per run (default 1)")
    p.add_argument("--jobs", type=int, default=None, help="runs side by side, one process each (default 1)")
    p.add_argument("--trainer-arg", action="append", default=[], metavar="ARG",
                   help="extra argument passed to every trainer run (repeatable), e.g. --trainer-arg=--la-tau=1.0")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m scripts.bench.bench_fmnist_lt",
                                description="Fashion-MNIST-LT benchmark of BalanceMix and its controls.")
    add_common_options(p)
    p.add_argument("--work", type=Path, default=Path("runs/bench-fmnist-lt"), help="output folder")
    p.add_argument("--quick", action="store_true", help="tiny subset, 4 steps, 1 seed: a smoke test")
    p.add_argument("--model-config", dest="model", choices=list(MODEL_CONFIGS), default=None,
                   help=f"the tiny ViT (default {DEFAULT_MODEL})")
    p.add_argument("--steps", type=int, default=None,
                   help=f"optimizer steps per run, every row (default {DEFAULT_STEPS}; BENCHMARKS.md)")
    p.add_argument("--rows", nargs="+", choices=[r.key for r in ROWS], default=None, help="run only these rows")
    return p


if __name__ == "__main__":
    raise SystemExit(main())
