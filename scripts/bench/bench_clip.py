"""CLIP scoring throughput on CPU: batched vs one image at a time, through the agent's own scorer.

Times ``agent.providers.scorer.ClipScorer.cosine`` (the evaluate step's call: PNG decode + preprocess + image tower
+ cosine against C_y) on the same files, side by side in one process:

* ``batched`` — one call with every image, ``batch_size`` images per forward pass (what evaluate does);
* ``one-at-a-time`` — one call per image, ``batch_size=1`` (what the official code does).

Models: the tests' tiny config (~1 M parameters) and ViT-B/32 with random weights (the real architecture;
throughput does not depend on the weights' values, and nothing can be downloaded here). fp32 on CPU:
bf16 autocast on this CPU was ~100x slower, not faster.

    python -m scripts.bench.bench_clip                    # both models (about a minute on 2 cores)
    python -m scripts.bench.bench_clip --quick            # tiny config, a few images (CI)
    python -m scripts.bench.bench_clip --json clip.json   # also write the numbers
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

TINY_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}
TEXT = "A photo of the class red fox with a bushy white-tipped tail and pointed black ears."


@dataclass
class Row:
    model: str
    mode: str
    images: int
    seconds: float
    images_per_s: float


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    with tempfile.TemporaryDirectory(prefix="bench-clip-") as tmp:
        root = Path(tmp)
        paths = _write_images(root / "img", args.images, args.image_side)
        models = {"tiny": _tiny_config(root)}
        if not args.quick:
            models["ViT-B-32"] = "ViT-B-32"
        rows: list[Row] = []
        for label, name in models.items():
            n = min(args.images, args.vit_images) if label == "ViT-B-32" else args.images
            rows += asyncio.run(_bench_model(label, name, paths[:n], args.batch_size))
    _print(rows, args)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n", encoding="utf-8")
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.bench.bench_clip", description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=256, help="images scored per mode (tiny config)")
    p.add_argument("--vit-images", type=int, default=64, help="images scored per mode for ViT-B-32")
    p.add_argument("--image-side", type=int, default=256, help="side of the PNG files (default 256)")
    p.add_argument("--batch-size", type=int, default=64, help="batched mode's batch size (the scorer's default)")
    p.add_argument("--quick", action="store_true", help="tiny config only, 16 images (CI)")
    p.add_argument("--json", default="", help="write the rows here as JSON")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.image_side = min(args.images, 16), min(args.image_side, 64)
    if args.images < 1 or args.batch_size < 1 or args.image_side < 8:
        p.error("--images and --batch-size must be >= 1, --image-side >= 8")
    return args


async def _bench_model(label: str, name: str, paths: list[Path], batch_size: int) -> list[Row]:
    from agent.providers.scorer import ClipScorer

    batched = ClipScorer.load(name, None, batch_size=batch_size, device="cpu")
    single = ClipScorer(batched.model, batched.preprocess, batched.tokenizer,
                        context_length=batched.context_length, batch_size=1, device="cpu")
    await batched.cosine(paths[:2], TEXT)  # warm-up: first-call allocations, text embedding cache
    await single.cosine(paths[:1], TEXT)

    start = time.perf_counter()
    a = await batched.cosine(paths, TEXT)
    t_batched = time.perf_counter() - start
    start = time.perf_counter()
    b = [s for p in paths for s in await single.cosine([p], TEXT)]
    t_single = time.perf_counter() - start
    # Same model, same files: the two modes must agree, or the comparison means nothing.
    if max(abs(x - y) for x, y in zip(a, b, strict=True)) > 1e-3:
        raise RuntimeError(f"{label}: batched and one-at-a-time scores differ")
    n = len(paths)
    return [Row(label, f"batched (batch {batch_size})", n, t_batched, n / t_batched),
            Row(label, "one-at-a-time", n, t_single, n / t_single)]


def _tiny_config(root: Path) -> str:
    path = root / "tiny-clip.json"
    path.write_text(json.dumps(TINY_CFG), encoding="utf-8")
    return str(path)


def _write_images(folder: Path, n: int, side: int) -> list[Path]:
    """Distinct smooth PNGs (a colour gradient each), like the renders the evaluate step reads."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        a, b = (37 * i) % 256, (91 * i + 40) % 256
        img = Image.linear_gradient("L").resize((side, side))
        rgb = Image.merge("RGB", (img, img.point(lambda v, a=a: (v + a) % 256), img.point(lambda v, b=b: b)))
        path = folder / f"{i:05d}.png"
        rgb.save(path)
        paths.append(path)
    return paths


def _print(rows: list[Row], args: argparse.Namespace) -> None:
    import torch

    print(f"# CLIP scoring on CPU ({torch.get_num_threads()} torch threads), {args.image_side}px PNG files, "
          f"agent.providers.scorer.ClipScorer.cosine, random weights")
    print(f"{'model':<9} {'mode':<20} {'images':>6} {'seconds':>8} {'images/s':>9} {'speed-up':>8}")
    base = {r.model: r.images_per_s for r in rows if r.mode == "one-at-a-time"}
    for r in rows:
        print(f"{r.model:<9} {r.mode:<20} {r.images:>6} {r.seconds:>8.2f} {r.images_per_s:>9.1f} "
              f"{r.images_per_s / base[r.model]:>7.1f}x")


if __name__ == "__main__":
    sys.exit(main())
