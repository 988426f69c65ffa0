"""Trainer data loading, torchvision's transforms vs trainer/data.py's, side by side in one process.

Uses ``scripts/bench/bench_trainer.py``'s data measurement (the trainer's own BalanceMix DataLoader) and swaps
``trainer.driver.build_transforms`` between the pipelines for alternating rounds, so all see the same machine
load. The torchvision pipeline is what trainer/data.py used before issue 7's fix; ``torch-normalize`` is
issue 7's pipeline with its torch-op normalisation, which issue 13 replaced by numpy arithmetic.

    python -m scripts.bench.bench_loader_ab [--config tiny|vit-b-32] [--rounds 3] [--steps 20]
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


class TorchOpsNormalize:
    """Issue 7's ToNormalizedTensor (torch ops on a (3, H, W) tensor): the reference for issue 13's numpy one."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        import torch

        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(3, 1, 1)

    def __call__(self, image: Any) -> Any:
        import numpy as np
        import torch

        hwc = torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8))
        return hwc.permute(2, 0, 1).contiguous().float().div_(255.0).sub_(self.mean).div_(self.std)


def torch_normalize_transforms(image_size: int, mean: Sequence[float], std: Sequence[float],
                               crop_min_scale: float) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """trainer.data's transforms with issue 7's torch-op normalisation swapped in."""
    import trainer.data as data

    current = data.ToNormalizedTensor
    data.ToNormalizedTensor = TorchOpsNormalize  # type: ignore[assignment,misc]
    try:
        return data.build_transforms(image_size, mean, std, crop_min_scale)
    finally:
        data.ToNormalizedTensor = current  # type: ignore[misc]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.bench.bench_loader_ab", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="tiny", choices=("tiny", "vit-b-32"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=20, help="batches timed per measurement")
    args = p.parse_args(argv)

    import trainer.driver as trainer_run
    from scripts.bench import bench_trainer
    from trainer.data import build_transforms

    cfg = bench_trainer.CONFIGS[args.config]
    targs = bench_trainer._parse(["--quick"])
    pipelines = {"torchvision": torchvision_transforms, "torch-normalize": torch_normalize_transforms,
                 "trainer.data": build_transforms}
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        data = bench_trainer._write_images(Path(tmp), cfg, n=max(64, cfg.batch * 2))
        try:
            for _ in range(args.rounds):
                for name, fn in pipelines.items():
                    trainer_run.build_transforms = fn  # type: ignore[assignment]
                    rates[name].append(bench_trainer._data_rate(cfg, data, args.steps, targs))
        finally:
            trainer_run.build_transforms = build_transforms  # type: ignore[assignment]
    print(f"# {args.config}: trainer DataLoader images/s, {args.rounds} alternating rounds")
    for name, values in rates.items():
        print(f"{name:<16} mean {sum(values) / len(values):8.1f}   rounds {' '.join(f'{v:.1f}' for v in values)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
