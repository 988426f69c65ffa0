"""Training throughput of CLIP ViT-B/32 + LoRA on one GPU: pre-decoded tensors vs JPEG files.

The trainer's hot loop (frozen visual tower, LoRA on ``attn`` / ``mlp.c_fc`` / ``mlp.c_proj`` as in
trainer/, a cosine head, cross-entropy, AdamW, bf16 autocast) timed from two input paths:

* ``decoded`` — a uint8 (N, 3, H, W) tensor cache in pinned host memory; each batch is gathered into a
  pinned buffer, copied with ``non_blocking=True`` and normalised on the GPU. This is the decoded-tensor
  cache a small dataset (ImageNet-LT tail + generated images) fits in.
* ``jpeg`` — JPEG files decoded by DataLoader workers (PIL + RandomResizedCrop + flip), pinned, copied.
  Also timed without the model (``jpeg-load``) to show whether decoding or the model step bounds the run.

Prints one table and writes the numbers as JSON (``--json``). Random weights: throughput does not depend
on their values, and the lent GPU machine cannot download any.

    python -m scripts.bench.gpu_bench_train --json out.json          # on a GPU (see scripts/gpu_bench.sh)
    python -m scripts.bench.gpu_bench_train --dry                    # CPU, tiny config: checks the code path
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# open_clip's normalisation constants (OPENAI_DATASET_MEAN / STD), applied on the device.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
LORA_TARGETS = ["attn", "mlp.c_fc", "mlp.c_proj"]  # not attn.out_proj: dead under nn.MultiheadAttention
TINY_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


@dataclass
class Result:
    """One measured path: images/s over ``steps`` timed steps of ``batch`` images."""

    path: str
    batch: int
    steps: int
    seconds: float
    images_per_s: float


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.dry:
        args.device, args.batch_size, args.steps, args.warmup = "cpu", 8, 2, 1
        args.images, args.workers, args.image_size = 32, min(args.workers, 2), 32
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        model_name = _model_name(args, Path(tmp))
        model, head, native = _build(model_name, args.classes, args.lora_rank, device)
        size = args.image_size or native
        step = _make_step(model, head, device, amp=not args.no_amp, compile_model=args.compile)
        results = [
            _time(step, _decoded_batches(args, size, device), args, "decoded"),
        ]
        jpeg_dir = _write_jpegs(Path(tmp) / "jpeg", args.images, int(size * 1.15), args.seed)
        results.append(_time(None, _jpeg_batches(args, jpeg_dir, size, device), args, "jpeg-load"))
        results.append(_time(step, _jpeg_batches(args, jpeg_dir, size, device), args, "jpeg"))
    _report(results, args, device, model_name, model)
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.bench.gpu_bench_train", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="ViT-B-32", help="open_clip model name or config JSON (default ViT-B-32)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=40, help="timed steps per path (default 40)")
    p.add_argument("--warmup", type=int, default=8, help="untimed steps first (cuDNN autotune, compile)")
    p.add_argument("--images", type=int, default=2048, help="images in the tensor cache / JPEG folder")
    p.add_argument("--image-size", type=int, default=0, help="input side (default: the model's)")
    p.add_argument("--workers", type=int, default=min(14, os.cpu_count() or 1), help="JPEG DataLoader workers")
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--device", default="auto", help="auto | cuda | cpu")
    p.add_argument("--no-amp", action="store_true", help="fp32 instead of bf16 autocast")
    p.add_argument("--compile", action="store_true", help="torch.compile the visual tower")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="", help="write the results here as JSON")
    p.add_argument("--dry", action="store_true", help="CPU, tiny config, 2 steps: checks every code path")
    return p.parse_args(argv)


def _model_name(args: argparse.Namespace, tmp: Path) -> str:
    """A model name open_clip knows; a config JSON (or --dry's tiny config) is registered first."""
    import open_clip

    path = args.model
    if args.dry:
        path = str(tmp / "tiny-clip.json")
        Path(path).write_text(json.dumps(TINY_CFG), encoding="utf-8")
    if path.endswith(".json"):
        open_clip.add_model_config(path)
        return Path(path).stem
    return str(path)


def _build(name: str, classes: int, rank: int, device: torch.device) -> tuple[nn.Module, nn.Module, int]:
    """Frozen visual tower with LoRA adapters + a trainable cosine head (the trainer's `lora` mode),
    and the tower's native input side."""
    import open_clip
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    clip = open_clip.create_model(name, pretrained=None)
    visual = clip.visual
    for p in visual.parameters():
        p.requires_grad_(False)
    lora = get_peft_model(visual, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=LORA_TARGETS))
    head = nn.Linear(int(visual.output_dim), classes, bias=False)
    side = visual.image_size
    return lora.to(device), head.to(device), int(side[0] if isinstance(side, tuple) else side)


def _make_step(model: nn.Module, head: nn.Module, device: torch.device, *, amp: bool,
               compile_model: bool) -> Callable[[torch.Tensor, torch.Tensor], None]:
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    weight: torch.Tensor = head.weight  # type: ignore[assignment]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
    forward: Callable[[torch.Tensor], torch.Tensor] = torch.compile(model) if compile_model else model
    scale = 30.0  # cosine-classifier temperature; its value does not change the cost

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            feats = forward(x)  # (B, D)
            logits = scale * F.linear(F.normalize(feats, dim=-1), F.normalize(weight, dim=-1))
            loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _normalise(x_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) on the device -> normalised float; done on the GPU, not in the loader."""
    mean = torch.tensor(MEAN, device=x_u8.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x_u8.device).view(1, 3, 1, 1)
    return (x_u8.float().div_(255.0) - mean) / std


def _decoded_batches(args: argparse.Namespace, size: int,
                     device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(args.seed)
    pin = device.type == "cuda"
    cache = torch.randint(0, 256, (args.images, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, args.classes, (args.images,), generator=g)
    if pin:
        cache, labels = cache.pin_memory(), labels.pin_memory()
    buf = torch.empty((args.batch_size, 3, size, size), dtype=torch.uint8, pin_memory=pin)
    while True:
        idx = torch.randint(0, args.images, (args.batch_size,), generator=g)
        torch.index_select(cache, 0, idx, out=buf)  # gather straight into pinned memory
        x = buf.to(device, non_blocking=True)
        y = labels[idx].to(device, non_blocking=True)
        if torch.rand(()) < 0.5:  # one flip per batch: augmentation cost without a per-image loop
            x = x.flip(-1)
        yield _normalise(x), y


def _jpeg_batches(args: argparse.Namespace, folder: Path, size: int,
                  device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    from torch.utils.data import DataLoader, RandomSampler

    ds = _JpegFolder(sorted(folder.glob("*.jpg")), size, args.classes)
    total = (args.steps + args.warmup) * args.batch_size
    loader = DataLoader(ds, batch_size=args.batch_size, sampler=RandomSampler(ds, True, total),
                        num_workers=args.workers, pin_memory=device.type == "cuda",
                        persistent_workers=False, prefetch_factor=4 if args.workers else None, drop_last=True)
    for x, y in loader:
        yield _normalise(x.to(device, non_blocking=True)), y.to(device, non_blocking=True)


class _JpegFolder(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """JPEG decode + RandomResizedCrop + flip -> uint8 (3, size, size); labels from the file index."""

    def __init__(self, files: list[Path], size: int, classes: int) -> None:
        from torchvision.transforms import v2

        self.files, self.classes = files, classes
        self.tf = v2.Compose([v2.PILToTensor(), v2.RandomResizedCrop(size, antialias=True),
                              v2.RandomHorizontalFlip()])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        with Image.open(self.files[i]) as im:
            return self.tf(im.convert("RGB")), i % self.classes


def _write_jpegs(folder: Path, n: int, side: int, seed: int) -> Path:
    """Smooth random images (gradients + noise) so JPEG sizes resemble photos, not white noise."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, side)
    for i in range(n):
        c = torch.rand(3, 2, generator=g)
        img = c[:, :1, None] * ramp[None, :, None] + c[:, 1:, None] * ramp[None, None, :]
        img = (img / 2 + 0.1 * torch.rand(3, side, side, generator=g)).clamp(0, 1)
        arr = (img * 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
        Image.fromarray(arr).save(folder / f"{i:05d}.jpg", quality=90)
    return folder


def _time(step: Callable[[torch.Tensor, torch.Tensor], None] | None,
          batches: Iterator[tuple[torch.Tensor, torch.Tensor]], args: argparse.Namespace, path: str) -> Result:
    """Warm up, then time ``args.steps`` steps; ``step=None`` times the input pipeline alone."""
    def run(n: int) -> None:
        for _ in range(n):
            x, y = next(batches)
            if step is not None:
                step(x, y)
        _sync(x.device)

    run(args.warmup)
    start = time.perf_counter()
    run(args.steps)
    seconds = time.perf_counter() - start
    return Result(path, args.batch_size, args.steps, seconds, args.batch_size * args.steps / seconds)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _report(results: list[Result], args: argparse.Namespace, device: torch.device, name: str,
            model: nn.Module) -> None:
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    info: dict[str, Any] = {"device": dev, "model": name, "amp_bf16": not args.no_amp,
                            "torch": torch.__version__, "workers": args.workers, "compile": args.compile,
                            "lora_rank": args.lora_rank, "dry": args.dry,
                            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
                            "results": [asdict(r) for r in results]}
    if device.type == "cuda":
        info["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    print(f"# {name} + LoRA r={args.lora_rank} ({info['trainable_params']:,} trainable), "
          f"bf16={not args.no_amp}, on {dev}, torch {torch.__version__}")
    print(f"{'path':<10} {'batch':>6} {'steps':>6} {'seconds':>9} {'images/s':>10}")
    for r in results:
        print(f"{r.path:<10} {r.batch:>6} {r.steps:>6} {r.seconds:>9.2f} {r.images_per_s:>10.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
