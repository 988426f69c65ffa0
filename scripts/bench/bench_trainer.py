"""Trainer throughput on this machine: data loading vs model step vs the real training loop, in images/s.

    python -m scripts.bench.bench_trainer [--quick] [--configs tiny,vit-b-32] [--workers N] [--threads N]
                                    [--json FILE]

For each configuration it measures, on synthetic images written to a temp folder:
- **data**: the trainer's own DataLoader (BalanceMix sampling: two decoded + augmented images per sample);
- **model**: one optimiser step of the trainer's model on random tensors (mixing, forward, soft-target loss,
  backward, AdamW), i.e. the compute bound;
- **train**: ``trainer.train.main`` for one short epoch, as ``train_log.jsonl`` reports it.
The smaller of data and model is what bounds a run. Configurations: ``tiny`` (the test ViT, 32 px, batch 128,
28 px PNG sources like Fashion-MNIST) and ``vit-b-32`` (ViT-B-32 at 224 px, batch 32, random init, LoRA,
256 px JPEG sources). CPU only unless ``--device cuda``. Numbers depend on machine load: the load average at
start is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

TINY = str(Path(__file__).resolve().parents[2] / "trainer" / "model_configs" / "ltgc-tiny-vit.json")


@dataclass(frozen=True)
class BenchConfig:
    name: str
    model: str
    image_size: int
    batch: int
    source_px: int
    source_ext: str
    steps: int
    quick_steps: int


CONFIGS = {
    "tiny": BenchConfig("tiny", TINY, 32, 128, 28, "png", 30, 6),
    "vit-b-32": BenchConfig("vit-b-32", "ViT-B-32", 224, 32, 256, "jpg", 6, 2),
}


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    # The trainer's own rule (trainer.loop.setup_runtime): the cores left after the DataLoader workers.
    args.threads = args.threads or max(1, (os.cpu_count() or 1) - args.workers)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    print(f"# load average at start: {load:.1f} on {os.cpu_count()} cores; torch threads "
          f"{torch.get_num_threads()}; workers {args.workers}; device {args.device}")
    results = []
    for name in args.configs.split(","):
        if name not in CONFIGS:
            print(f"bench_trainer: error: unknown config {name!r} (choose from {', '.join(CONFIGS)})",
                  file=sys.stderr)
            return 2
        cfg = CONFIGS[name]
        steps = cfg.quick_steps if args.quick else cfg.steps
        with tempfile.TemporaryDirectory(prefix="bench-trainer-") as tmp:
            results.append(bench_one(cfg, steps, Path(tmp), args))
        print(_row(results[-1]), flush=True)
    print("\n| config | batch | data img/s | model-step img/s | train loop img/s | bound by |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(_row(r))
    if args.json:
        Path(args.json).write_text(json.dumps({"load_average": load, "results": results}, indent=2) + "\n")
    return 0


def bench_one(cfg: BenchConfig, steps: int, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    data = _write_images(tmp, cfg, n=max(64, cfg.batch * 2))
    data_rate = _data_rate(cfg, data, steps, args)
    model_rate = _model_rate(cfg, steps, args)
    train_rate = _train_rate(cfg, data, steps, tmp / "out", args)
    return {"config": cfg.name, "model": Path(cfg.model).name, "image_size": cfg.image_size, "batch": cfg.batch,
            "steps": steps, "data_images_per_s": data_rate, "model_images_per_s": model_rate,
            "train_images_per_s": train_rate, "bound": "data" if data_rate < model_rate else "model"}


def _write_images(root: Path, cfg: BenchConfig, n: int) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    lines = []
    for k in range(n):
        label = k % 4
        px = rng.integers(0, 256, (cfg.source_px, cfg.source_px, 3), dtype=np.uint8)
        rel = f"img/{k}.{cfg.source_ext}"
        (root / "img").mkdir(exist_ok=True)
        Image.fromarray(px).save(root / rel, **({"quality": 90} if cfg.source_ext == "jpg" else {}))
        lines.append(f"{rel} {label}")
    half = len(lines) // 2
    (root / "train.txt").write_text("\n".join(lines[:half]) + "\n")
    (root / "gen.txt").write_text("\n".join(lines[half:]) + "\n")
    (root / "test.txt").write_text("\n".join(lines[:8]) + "\n")
    (root / "names.txt").write_text("cat\ndog\nfox\nowl\n")
    return {"train": root / "train.txt", "gen": root / "gen.txt", "test": root / "test.txt",
            "names": root / "names.txt"}


def _train_args(cfg: BenchConfig, data: dict[str, Path], steps: int, out: Path,
                args: argparse.Namespace) -> list[str]:
    return ["--train", str(data["train"]), "--generated", str(data["gen"]), "--test", str(data["test"]),
            "--class-names", str(data["names"]), "--out", str(out), "--model", cfg.model, "--pretrained", "none",
            "--mode", "balancemix", "--tune", "lora", "--image-size", str(cfg.image_size),
            "--batch-size", str(cfg.batch), "--samples-per-epoch", str(steps * cfg.batch), "--epochs", "1",
            "--workers", str(args.workers), "--device", args.device, "--max-test", "8",
            "--threads", str(args.threads)]


def _data_rate(cfg: BenchConfig, data: dict[str, Path], steps: int, args: argparse.Namespace) -> float:
    """Images/s of the trainer's DataLoader alone (first batch excluded: worker start-up)."""
    import torch

    from trainer.driver import load_data, make_train_loader
    from trainer.loop import Runtime
    from trainer.train import build_parser

    targs = build_parser().parse_args(_train_args(cfg, data, steps + 1, Path("unused"), args))
    bundle = load_data(targs, lambda m: None)
    preprocess = {"size": cfg.image_size, "mean": (0.48, 0.46, 0.41), "std": (0.27, 0.26, 0.28)}
    _, loader = make_train_loader(targs, bundle, preprocess, Runtime(torch.device("cpu")))
    it = iter(loader)
    next(it)
    start, images = time.perf_counter(), 0
    for batch in it:
        images += batch["x_i"].shape[0]
    return images / (time.perf_counter() - start)


def _model_rate(cfg: BenchConfig, steps: int, args: argparse.Namespace) -> float:
    """Images/s of optimiser steps on random tensors (one warm-up step excluded)."""
    import torch

    from trainer.balancemix import mix_batch
    from trainer.losses import soft_cross_entropy
    from trainer.model import ModelConfig, build_classifier

    model, _ = build_classifier(ModelConfig(model=cfg.model, pretrained="none", image_size=cfg.image_size),
                                ["cat", "dog", "fox", "owl"])
    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    model.to(device).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    shape = (cfg.batch, 3, cfg.image_size, cfg.image_size)
    y = torch.randint(0, 4, (cfg.batch,))

    def step() -> None:
        x, target = mix_batch(torch.randn(shape), y, torch.randn(shape), y.flip(0), torch.rand(cfg.batch), 4)
        loss = soft_cross_entropy(model(x.to(device)), target.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * cfg.batch / (time.perf_counter() - start)


def _train_rate(cfg: BenchConfig, data: dict[str, Path], steps: int, out: Path,
                args: argparse.Namespace) -> float:
    from trainer.train import main as train_main

    rc = train_main(_train_args(cfg, data, steps, out, args))
    if rc != 0:
        raise SystemExit(f"bench_trainer: trainer exited with {rc}")
    row = json.loads((out / "train_log.jsonl").read_text().splitlines()[-1])
    return float(row["images_per_s"])


def _row(r: dict[str, Any]) -> str:
    return (f"| {r['config']} ({r['image_size']} px) | {r['batch']} | {r['data_images_per_s']:.0f} | "
            f"{r['model_images_per_s']:.1f} | {r['train_images_per_s']:.1f} | {r['bound']} |")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.bench.bench_trainer", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="few steps per config (a smoke run, ~1-2 min on CPU)")
    p.add_argument("--configs", default="tiny,vit-b-32", help="comma-separated: tiny, vit-b-32")
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers (default 1)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = the trainer's default: cores - workers)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--json", default=None, help="also write the results as JSON here")
    return p.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(main())
