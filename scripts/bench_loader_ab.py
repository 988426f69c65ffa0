"""Trainer data loading, torchvision's transforms vs trainer/data.py's, side by side in one process.

Uses ``scripts/bench_trainer.py``'s data measurement (the trainer's own BalanceMix DataLoader) and swaps
``trainer.run.build_transforms`` between the two pipelines for alternating rounds, so both see the same
machine load. The torchvision pipeline is what trainer/data.py used before issue 7's fix.

    python -m scripts.bench_loader_ab [--config tiny|vit-b-32] [--rounds 3] [--steps 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def torchvision_transforms(image_size: int, mean: Sequence[float], std: Sequence[float],
                           crop_min_scale: float) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """The reference pipeline: RandomResizedCrop + RandomHorizontalFlip + ToTensor + Normalize."""
    from torchvision import transforms as T

    norm = T.Normalize(mean=list(mean), std=list(std))
    bicubic = T.InterpolationMode.BICUBIC
    train = T.Compose([T.RandomResizedCrop(image_size, scale=(crop_min_scale, 1.0), interpolation=bicubic),
                       T.RandomHorizontalFlip(), T.ToTensor(), norm])
    evaluate = T.Compose([T.Resize(image_size, interpolation=bicubic), T.CenterCrop(image_size), T.ToTensor(), norm])
    return train, evaluate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.bench_loader_ab", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="tiny", choices=("tiny", "vit-b-32"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=20, help="batches timed per measurement")
    args = p.parse_args(argv)

    import trainer.run as trainer_run
    from scripts import bench_trainer
    from trainer.data import build_transforms

    cfg = bench_trainer.CONFIGS[args.config]
    targs = bench_trainer._parse(["--quick"])
    rates: dict[str, list[float]] = {"torchvision": [], "trainer.data": []}
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        data = bench_trainer._write_images(Path(tmp), cfg, n=max(64, cfg.batch * 2))
        try:
            for _ in range(args.rounds):
                for name, fn in (("torchvision", torchvision_transforms), ("trainer.data", build_transforms)):
                    trainer_run.build_transforms = fn  # type: ignore[assignment]
                    rates[name].append(bench_trainer._data_rate(cfg, data, args.steps, targs))
        finally:
            trainer_run.build_transforms = build_transforms  # type: ignore[assignment]
    print(f"# {args.config}: trainer DataLoader images/s, {args.rounds} alternating rounds")
    for name, values in rates.items():
        print(f"{name:<13} mean {sum(values) / len(values):8.1f}   rounds {' '.join(f'{v:.1f}' for v in values)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
