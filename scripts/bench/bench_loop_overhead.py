"""The trainer's training loop against a bare torch loop of the same model on the same Fashion-MNIST-LT split.

    python -m scripts.bench.bench_loop_overhead --json loop.json             # 2 modes x 3 rounds x 150 steps
    python -m scripts.bench.bench_loop_overhead --quick                      # tiny subset, 3 steps: a smoke test

Per mode (``plain``, ``balancemix``) and round, one after the other (so machine load hits both alike):
- **trainer**: ``trainer.train.main`` for ``--steps`` steps (1 torch thread, no loader workers, the
  benchmark's settings), images/s of its training loop as ``train_log.jsonl`` reports it: DataLoader with
  per-image decode-cache lookup, random resized crop + flip, normalisation, collation; mixing; soft-target
  loss; gradient clipping; AdamW; LR schedule; progress bar.
- **bare**: the same model (same config and seed), the same sampler plan, mixing and soft-target loss and
  AdamW, on the training pool pre-decoded once into one normalised tensor: no augmentation, no DataLoader,
  no clipping, no schedule. The compute floor of a step.
- **data**: the trainer's DataLoader alone for the same steps (what the loop spends feeding the model).
The ratio is trainer / bare images/s (medians over rounds): what the trainer's own machinery costs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from scripts.bench.bench_fmnist_lt import QUICK, ROWS, prepare_or_report
from scripts.lt.runner import (
    DEFAULT_DATA_DIR,
    DEFAULT_MODEL,
    MODEL_CONFIGS,
    BenchConfig,
    machine_state,
    trainer_argv,
)

MODES = ("plain", "balancemix")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cfg = BenchConfig(data_dir=args.data_dir, work=args.work, model=args.model_config, seeds=(0,), steps=args.steps)
    if args.quick:
        cfg = replace(cfg, **{**QUICK, "steps": 3})
    import torch

    torch.set_num_threads(cfg.threads)
    before = machine_state()
    data = prepare_or_report(cfg)
    if data is None:
        return 2
    rows = {r.mode: r for r in ROWS if r.key in ("plain", "balancemix")}
    measures = {"trainer": trainer_rate, "bare": bare_rate, "data": data_rate}
    rates: dict[str, dict[str, list[tuple[float, float]]]] = {m: {k: [] for k in measures} for m in MODES}
    images = cfg.steps * cfg.batch_size
    torch.use_deterministic_algorithms(True, warn_only=True)  # as the trainer's setup_runtime sets it
    for round_ in range(args.rounds):
        for mode in MODES:
            targv = trainer_argv(cfg, data, rows[mode], 0, cfg.work / "unused")
            for name, measure in measures.items():
                rates[mode][name].append(measure(targv, images))
            print(f"round {round_ + 1} {mode} (wall / CPU images/s): "
                  + ", ".join(f"{k} {v[-1][0]:.0f} / {v[-1][1]:.0f}" for k, v in rates[mode].items()), flush=True)
    summary = {m: {f"{k}_{clock}": round(statistics.median(x[c] for x in v), 1)
                   for k, v in r.items() for c, clock in enumerate(("wall", "cpu"))} for m, r in rates.items()}
    for s in summary.values():
        s["ratio_wall"] = round(s["trainer_wall"] / s["bare_wall"], 3)
        s["ratio_cpu"] = round(s["trainer_cpu"] / s["bare_cpu"], 3)
    result = {"model": cfg.model, "steps": cfg.steps, "batch_size": cfg.batch_size, "rounds": args.rounds,
              "machine": {"start": before, "end": machine_state(commit=False)}, "summary": summary, "rates": rates}
    print("\n| mode | bare loop img/s (wall / CPU) | trainer loop img/s (wall / CPU) | trainer / bare (wall / CPU) "
          "| trainer's DataLoader alone img/s (wall / CPU) |")
    print("|---|---|---|---|---|")
    for mode, s in summary.items():
        print(f"| {mode} | {s['bare_wall']:.0f} / {s['bare_cpu']:.0f} | {s['trainer_wall']:.0f} / {s['trainer_cpu']:.0f} "
              f"| {s['ratio_wall']:.2f} / {s['ratio_cpu']:.2f} | {s['data_wall']:.0f} / {s['data_cpu']:.0f} |")
    print(f"load average {before['load_average']} at start, {result['machine']['end']['load_average']} at end")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


class Timer:
    """Wall and CPU seconds of a block (CPU: this process, all threads): CPU time is what contention on a
    shared machine distorts least, so the ratios are reported on both clocks."""

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def trainer_rate(argv: list[str], images: int) -> tuple[float, float]:
    """(wall, CPU) images/s of the trainer's own epoch: ``trainer.loop.train_one_epoch`` on the objects
    ``trainer.driver`` builds for a run (loader, model, AdamW + schedule, loss), with its progress bar."""
    import torch
    from tqdm import tqdm

    from trainer.driver import build_loss, la_prior, make_train_loader
    from trainer.loop import Runtime, build_optimizer, build_scheduler, train_one_epoch

    args, data, model, pre = _setup(argv)
    rt = Runtime(torch.device("cpu"))
    _, loader = make_train_loader(args, data, pre, rt)
    steps = -(-args.samples_per_epoch // args.batch_size)
    optimizer = build_optimizer(model, args.lr, args.weight_decay)
    scheduler = build_scheduler(optimizer, round(args.warmup_ratio * steps), steps)
    loss_fn = build_loss(args, data, la_prior(args, data))
    with Timer() as t, tqdm(total=images, disable=None, file=sys.stderr, leave=False) as bar:
        train_one_epoch(model, loader, optimizer, scheduler, loss_fn, rt, len(data.class_names), args.clip_grad, bar)
    return images / t.wall, images / t.cpu


def bare_rate(argv: list[str], images: int) -> tuple[float, float]:
    """(wall, CPU) images/s of a bare loop: same model, plan, mixing, loss and AdamW on pre-decoded tensors."""
    import torch

    from trainer.balancemix import epoch_plan, mix_batch
    from trainer.data import ImageLoader, build_transforms
    from trainer.losses import soft_cross_entropy

    args, data, model, pre = _setup(argv)
    size = pre["size"][0] if isinstance(pre["size"], (tuple, list)) else pre["size"]
    _, eval_tf = build_transforms(int(size), pre["mean"], pre["std"], 1.0)
    cache = ImageLoader(1024)
    pool = data.original + data.generated
    pixels = torch.stack([eval_tf(cache.load(s)) for s in pool])  # (N, 3, S, S), decoded once
    labels = torch.tensor([s.label for s in pool])
    plan = epoch_plan(_sampling(args), [s.label for s in data.original], [s.label for s in data.generated], 0)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    model.train()
    batch, classes = args.batch_size, len(data.class_names)
    with Timer() as t:
        for b in range(-(-images // batch)):
            part = slice(b * batch, (b + 1) * batch)
            i, j = torch.from_numpy(plan.i[part]), torch.from_numpy(plan.j[part])
            x_j = pixels[j] if plan.j[0] >= 0 else torch.empty(0)
            x, target = mix_batch(pixels[i], labels[i], x_j, labels[j.clamp(min=0)], torch.from_numpy(plan.lam[part]),
                                  classes)
            loss = soft_cross_entropy(model(x), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return images / t.wall, images / t.cpu


def data_rate(argv: list[str], images: int) -> tuple[float, float]:
    """(wall, CPU) images/s of the trainer's DataLoader alone: the same sampler and transforms as a run."""
    import torch

    from trainer.driver import make_train_loader
    from trainer.loop import Runtime

    args, data, _, pre = _setup(argv)
    _, loader = make_train_loader(args, data, pre, Runtime(torch.device("cpu")))
    with Timer() as t:
        for _ in loader:
            pass
    return images / t.wall, images / t.cpu


def _setup(argv: list[str]) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Parsed trainer options, the run's data and a fresh model (same config and seed as a run builds)."""
    from trainer.driver import load_data
    from trainer.model import ModelConfig, build_classifier
    from trainer.train import build_parser

    args = build_parser().parse_args(argv)
    data = load_data(args, lambda m: None)
    model, pre = build_classifier(ModelConfig(model=args.model, pretrained="none", tune=args.tune, head=args.head,
                                              seed=args.seed), data.class_names)
    return args, data, model, pre


def _sampling(args: Any) -> Any:
    from trainer.balancemix import SamplingConfig

    return SamplingConfig(mode=args.mode, alpha=args.alpha, gen_sampling=args.gen_sampling,
                          samples_per_epoch=args.samples_per_epoch, seed=args.seed)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m scripts.bench.bench_loop_overhead", description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--work", type=Path, default=Path("runs/bench-loop-overhead"), help="split and D_g go here")
    p.add_argument("--model-config", choices=list(MODEL_CONFIGS), default=DEFAULT_MODEL)
    p.add_argument("--steps", type=int, default=150, help="steps per measurement (default 150)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported (default 3)")
    p.add_argument("--quick", action="store_true", help="tiny subset, 3 steps: a smoke test")
    p.add_argument("--json", default=None, help="also write the results here")
    return p


if __name__ == "__main__":
    sys.exit(main())
