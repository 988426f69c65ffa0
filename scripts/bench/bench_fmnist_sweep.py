"""Sweeps that chose the Fashion-MNIST-LT benchmark's defaults: the model config and the training budget.

    python -m scripts.bench.bench_fmnist_sweep models --models vit-0.47m vit-0.15m --steps 1500 --jobs 2
    python -m scripts.bench.bench_fmnist_sweep budget --budgets 250 500 1000 2000 4000 --jobs 2
    python -m scripts.bench.bench_fmnist_sweep budget --quick          # tiny subset: a smoke test (< 1 min)

Both train the rows ``ce`` (no D_g, CE) and ``balancemix`` (the paper) on the benchmark's split
(:mod:`scripts.bench.bench_fmnist_lt`, same options for the split profile, seeds, parallelism), one point per
(model, steps x batch) and seed:

- ``models``: every ``--models`` entry of :data:`scripts.lt.runner.MODEL_CONFIGS` at one ``--steps``; the
  table gives parameters, the trainer loop's images/s, wall time per run and accuracy.
- ``budget``: one model at every ``--budgets`` step count; the table gives accuracy per budget, the plot
  (``budget.png``) accuracy against budget, and the *converged budget*: the smallest budget at which doubling
  it moves CE's overall accuracy by less than one point (:func:`converged_budget`).

Outputs in ``--work`` (default ``runs/bench-fmnist-sweep``): ``<sweep>.json`` (settings, load average and git
commit at start and end, every run), ``<sweep>.md`` and, for ``budget``, ``budget.png``.
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

from scripts.bench.bench_fmnist_lt import QUICK, ROWS, add_common_options, prepare_or_report
from scripts.lt.runner import (
    DEFAULT_MODEL,
    MODEL_CONFIGS,
    BenchConfig,
    Job,
    jsonable,
    machine_state,
    make_job,
    run_jobs,
    write_model_json,
)

SWEEP_ROWS = ("ce", "balancemix")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sweep; exit status 0, or 2 with one line for unusable settings."""
    args = _normalize(_parser().parse_args(argv))
    points = [(m, s) for m in args.models for s in args.budgets]
    base = BenchConfig(data_dir=args.data_dir, work=args.work, seeds=(0,), rows=SWEEP_ROWS)
    if args.quick:
        base = replace(base, **{k: v for k, v in QUICK.items() if k != "steps"})
    overrides: dict[str, Any] = {k: getattr(args, k) for k in ("n_max", "imbalance", "split_seed", "k", "epochs",
                                                               "batch_size", "lr", "threads", "jobs")
                                 if getattr(args, k) is not None}
    if args.seeds:
        overrides["seeds"] = tuple(args.seeds)
    base = replace(base, trainer_args=tuple(args.trainer_arg), **overrides)
    try:
        for model, steps in points:
            replace(base, model=model, steps=steps).check()
    except ValueError as exc:
        print(f"bench_fmnist_sweep: error: {exc}", file=sys.stderr)
        return 2
    started, before = time.monotonic(), machine_state()
    data = prepare_or_report(replace(base, model=points[0][0]))
    if data is None:
        return 2
    jobs: list[Job] = []
    for model, steps in points:
        cfg = replace(base, model=model, steps=steps)
        model_data = dict(data, model=write_model_json(base.work, model))
        jobs += [make_job(cfg, model_data, row, seed, base.work / "runs" / model / str(steps) / row.key / f"seed{seed}")
                 for row in ROWS if row.key in SWEEP_ROWS for seed in base.seeds]
    runs = run_jobs(jobs, base.jobs)
    failed = [r for r in runs if r["status"] != 0]
    if failed:
        print(f"bench_fmnist_sweep: error: run {failed[0]['out']} failed (trainer exit {failed[0]['status']})",
              file=sys.stderr)
        return 1
    for job, run in zip(jobs, runs, strict=True):
        run.update(model=job.out.parts[-4], steps=int(job.out.parts[-3]), **_speed(job.out))
    summary = summarize(runs, base.batch_size)
    results = {"sweep": args.sweep, "config": jsonable(asdict(base)), "points": [list(p) for p in points],
               "wall_s": round(time.monotonic() - started, 1),
               "machine": {"start": before, "end": machine_state(commit=False)}, "summary": summary, "runs": runs}
    if args.sweep == "budget":
        results["converged_steps"] = converged_budget(args.budgets, [summary[(args.models[0], s)]["ce"]["overall"]
                                                                      for s in args.budgets])
    results["summary"] = [dict(model=m, steps=s, **v) for (m, s), v in summary.items()]
    out = base.work / f"{args.sweep}.json"
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    markdown = format_sweep(results)
    (base.work / f"{args.sweep}.md").write_text(markdown + "\n", encoding="utf-8")
    if args.sweep == "budget":
        plot_budget(results, base.work / "budget.png")
    print(markdown)
    print(f"\n{len(runs)} runs in {results['wall_s']} s (load average {before['load_average']} at start, "
          f"{results['machine']['end']['load_average']} at end); results in {out}")
    return 0


def summarize(runs: Sequence[dict[str, Any]], batch: int) -> dict[tuple[str, int], dict[str, Any]]:
    """Per (model, steps): per row the mean over seeds of each group, images/s and wall s per run."""
    summary: dict[tuple[str, int], dict[str, Any]] = {}
    for run in runs:
        summary.setdefault((run["model"], run["steps"]), {}).setdefault(run["row"], []).append(run)
    table: dict[tuple[str, int], dict[str, Any]] = {}
    for key, by_row in summary.items():
        entry: dict[str, Any] = {"samples": key[1] * batch}
        for row, mine in by_row.items():
            entry[row] = {g: _mean([r["metrics"][g] for r in mine]) for g in ("overall", "many", "medium", "few")}
            entry[row].update(images_per_s=_mean([r["images_per_s"] for r in mine]),
                              wall_s=_mean([r["wall_s"] for r in mine]), trainable=mine[0]["trainable"])
        table[key] = entry
    return table


def converged_budget(budgets: Sequence[int], accuracy: Sequence[float | None], tolerance: float = 1.0) -> int | None:
    """The smallest budget ``b`` whose doubling ``2b`` (also measured) moves accuracy by less than ``tolerance``.

    >>> converged_budget([250, 500, 1000, 2000, 4000], [50.0, 60.0, 65.0, 65.5, 66.8])
    1000
    >>> converged_budget([250, 500], [50.0, 60.0]) is None
    True
    """
    acc = dict(zip(budgets, accuracy, strict=True))
    for b in sorted(acc):
        a, doubled = acc[b], acc.get(2 * b)
        if a is not None and doubled is not None and abs(doubled - a) < tolerance:
            return b
    return None


def format_sweep(results: dict[str, Any]) -> str:
    """The markdown table of a sweep: one line per (model, steps)."""
    lines = ["| model | trainable params | steps x batch | train loop img/s (CE / BM) | wall s per run (CE / BM) "
             "| CE all / few | BalanceMix all / few |", "|---|---|---|---|---|---|---|"]
    for p in results["summary"]:
        ce, bm = p["ce"], p["balancemix"]
        lines.append(f"| {p['model']} | {ce['trainable']:,} | {p['steps']} x {p['samples'] // p['steps']} | "
                     f"{ce['images_per_s']:.0f} / {bm['images_per_s']:.0f} | {ce['wall_s']:.0f} / {bm['wall_s']:.0f} | "
                     f"{_pct(ce['overall'])} / {_pct(ce['few'])} | {_pct(bm['overall'])} / {_pct(bm['few'])} |")
    if results["sweep"] == "budget":
        found = results["converged_steps"]
        lines.append("")
        lines.append(f"converged budget (doubling moves CE all by < 1 point): "
                     f"{found if found is not None else 'not reached in this sweep'}")
    return "\n".join(lines)


def plot_budget(results: dict[str, Any], path: Path) -> None:
    """Accuracy (overall and few) of CE and BalanceMix against the budget, log-2 x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = results["summary"]
    steps = [p["steps"] for p in points]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for row, name, color in (("ce", "no D_g (CE)", "tab:blue"), ("balancemix", "balancemix", "tab:red")):
        for group, style in (("overall", "-"), ("few", "--")):
            ax.plot(steps, [p[row][group] for p in points], style, color=color, marker="o",
                    label=f"{name}, {'all' if group == 'overall' else 'few'}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(steps, [str(s) for s in steps])
    ax.set_xlabel(f"optimizer steps (batch {points[0]['samples'] // points[0]['steps']})")
    ax.set_ylabel("top-1 accuracy on the balanced test set (%)")
    ax.set_title(f"Fashion-MNIST-LT, {points[0]['model']}, seed {', '.join(map(str, results['config']['seeds']))}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _speed(out: Path) -> dict[str, Any]:
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    return {"images_per_s": metrics.get("images_per_s"), "trainable": config.get("trainable_parameters")}


def _mean(values: Sequence[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return round(statistics.fmean(found), 2) if found else None


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m scripts.bench.bench_fmnist_sweep", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="sweep", required=True)
    models = sub.add_parser("models", help="compare model configs at one budget")
    models.add_argument("--models", nargs="+", choices=list(MODEL_CONFIGS), default=list(MODEL_CONFIGS))
    models.add_argument("--steps", type=int, default=1500, help="optimizer steps per run (default 1500)")
    budget = sub.add_parser("budget", help="accuracy against the training budget, one model")
    budget.add_argument("--model-config", choices=list(MODEL_CONFIGS), default=DEFAULT_MODEL)
    budget.add_argument("--budgets", type=int, nargs="+", default=[250, 500, 1000, 2000, 4000],
                        help="optimizer steps per run (default 250 500 1000 2000 4000)")
    for sp in (models, budget):
        add_common_options(sp)
        sp.add_argument("--work", type=Path, default=Path("runs/bench-fmnist-sweep"), help="output folder")
        sp.add_argument("--quick", action="store_true", help="the --quick subset of bench_fmnist_lt: a smoke test")
    return p


def _normalize(args: argparse.Namespace) -> argparse.Namespace:
    if args.sweep == "models":
        args.budgets = [args.steps]
    else:
        args.models = [args.model_config]
    return args



if __name__ == "__main__":
    raise SystemExit(main())
