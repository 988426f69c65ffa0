"""Image generation and CLIP scoring images/s on one GPU: the two model stages of a local LTGC run.

* ``generate`` — an SDXL-sized ``UNet2DConditionModel`` (2.6 B parameters: SDXL's block widths, attention
  layers and 2,048-wide text conditioning) and SDXL's ``AutoencoderKL`` decoder, random weights in bf16, at
  512 x 512 px (64 x 64 latents). One image set = ``steps`` UNet passes + one VAE decode, timed for
  batch 1 / 4 / 16 and 1-4 steps, no classifier-free guidance (guidance 0, as SDXL-Turbo runs; guidance > 1
  doubles the UNet batch). The text encoders are left out (one pass per prompt, small next to the UNet).
* ``score`` — CLIP ViT-B/32 (open_clip, random weights) as agent/providers/scorer.py runs it: ``ClipScorer`` on
  PNG files (decode + preprocess on the CPU, fp32 model, batch 64), then the model alone on device tensors
  (batch 256, fp32 and bf16 autocast) to show what the decode costs.

Random weights: throughput does not depend on their values, and the lent GPU machine downloads nothing.

    python -m scripts.bench.gpu_bench_gen --json gen.json     # on a GPU (see scripts/gpu_bench.sh)
    python -m scripts.bench.gpu_bench_gen --dry               # CPU, tiny configs: checks every code path
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from scripts.bench.gpu_bench_train import TINY_CFG

# SDXL base 1.0's unet/config.json and vae/config.json, as numbers (no download).
SDXL_UNET: dict[str, Any] = {
    "sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280), "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20), "cross_attention_dim": 2048, "use_linear_projection": True,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
SDXL_VAE: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "sample_size": 1024,
    "block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4, "scaling_factor": 0.13025,
}
TINY_UNET: dict[str, Any] = {
    "sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 1, "block_out_channels": (32, 64),
    "attention_head_dim": (2, 4), "cross_attention_dim": 32, "norm_num_groups": 8,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"), "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "addition_embed_type": "text_time", "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 64,
}
TINY_VAE: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1, "sample_size": 32,
    "block_out_channels": (16, 32), "norm_num_groups": 8, "down_block_types": ("DownEncoderBlock2D",) * 2,
    "up_block_types": ("UpDecoderBlock2D",) * 2,
}
TIME_IDS = 6  # SDXL's added time ids: original size, crop, target size


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.dry:
        args.device, args.image_size, args.batches, args.steps, args.reps, args.score_images = "cpu", 32, [1, 2], [1, 2], 1, 8
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    info: dict[str, Any] = {"device": device, "dry": args.dry,
                            "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None}
    if "generate" in args.phases:
        info["generate"] = _generate(args, device)
    if "score" in args.phases:
        info["score"] = _score(args, device)
    _report(info)
    if args.json:
        Path(args.json).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.bench.gpu_bench_gen", description=__doc__.split("\n")[0])
    p.add_argument("--phases", nargs="+", default=["generate", "score"], choices=["generate", "score"])
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--steps", type=int, nargs="+", default=[1, 2, 3, 4])
    p.add_argument("--reps", type=int, default=3, help="timed image sets per (batch, steps)")
    p.add_argument("--score-images", type=int, default=512, help="PNG files scored by ClipScorer")
    p.add_argument("--device", default="auto", help="auto | cuda | cpu")
    p.add_argument("--json", default="", help="write the results here as JSON")
    p.add_argument("--dry", action="store_true", help="CPU, tiny configs: checks every code path")
    return p.parse_args(argv)


def _generate(args: argparse.Namespace, device: str) -> dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # its note on casting with .to(): random weights, no fp32 islands
    unet_cfg, vae_cfg = (TINY_UNET, TINY_VAE) if args.dry else (SDXL_UNET, SDXL_VAE)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    with torch.device(device):  # built on the device: a 2.6 B-parameter init on the CPU takes minutes
        unet = UNet2DConditionModel(**unet_cfg).to(dtype).eval()
        vae = AutoencoderKL(**vae_cfg).to(dtype).eval()
    side = args.image_size // 2 ** (len(vae_cfg["block_out_channels"]) - 1)
    text_dim = unet_cfg["projection_class_embeddings_input_dim"] - TIME_IDS * unet_cfg["addition_time_embed_dim"]
    rows = []
    for batch in args.batches:
        latents = torch.randn(batch, 4, side, side, device=device, dtype=dtype)  # (B, 4, H/8, W/8)
        cond = torch.randn(batch, 77, unet_cfg["cross_attention_dim"], device=device, dtype=dtype)
        added = {"text_embeds": torch.randn(batch, text_dim, device=device, dtype=dtype),
                 "time_ids": torch.randn(batch, TIME_IDS, device=device, dtype=dtype)}

        @torch.inference_mode()
        def image_set(steps: int, latents: torch.Tensor = latents, cond: torch.Tensor = cond,
                      added: dict[str, torch.Tensor] = added) -> torch.Tensor:
            x = latents
            for i in range(steps):
                t = torch.full((x.shape[0],), 999 - 250 * i, device=device)
                x = unet(x, t, encoder_hidden_states=cond, added_cond_kwargs=added).sample
            return vae.decode(x / vae.config.scaling_factor).sample  # (B, 3, H, W)

        image_set(1)  # warm-up: cuDNN autotune, allocator
        for steps in args.steps:
            seconds = _timed(lambda steps=steps: image_set(steps), args.reps, device)
            rows.append({"batch": batch, "steps": steps, "seconds_per_set": round(seconds, 4),
                         "images_per_s": round(batch / seconds, 2)})
    params = sum(p.numel() for p in unet.parameters())
    return {"unet_params": params, "image_size": args.image_size, "dtype": str(dtype).removeprefix("torch."),
            "rows": rows}


def _score(args: argparse.Namespace, device: str) -> dict[str, Any]:
    import open_clip
    from PIL import Image

    from agent.providers.scorer import ClipScorer

    with tempfile.TemporaryDirectory(prefix="gpu-bench-gen-") as tmp:
        name = "ViT-B-32"
        if args.dry:
            path = Path(tmp) / "tiny-clip.json"
            path.write_text(json.dumps(TINY_CFG), encoding="utf-8")
            open_clip.add_model_config(str(path))
            name = path.stem
        torch.manual_seed(0)
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None, device=device)
        scorer = ClipScorer(model, preprocess, open_clip.get_tokenizer(name), context_length=77, batch_size=64,
                            device=device)
        rng = torch.Generator().manual_seed(0)
        paths = []
        for i in range(args.score_images):  # generated-image-sized PNGs, as the evaluate node reads them
            pixels = torch.randint(0, 256, (args.image_size, args.image_size, 3), generator=rng, dtype=torch.uint8)
            paths.append(Path(tmp) / f"{i:04d}.png")
            Image.fromarray(pixels.numpy()).save(paths[-1])
        scorer._cosine_sync(paths[:8], "a photo of the class fox.")  # warm-up
        seconds = _timed(lambda: scorer._cosine_sync(paths, "a photo of the class fox."), 1, device)
        rows = [{"path": "ClipScorer (PNG decode + preprocess + fp32, batch 64)", "batch": 64,
                 "images_per_s": round(len(paths) / seconds, 1)}]
        side = model.visual.image_size
        side = side[0] if isinstance(side, tuple) else side
        pixels = torch.randn(256 if not args.dry else 8, 3, side, side, device=device)  # (B, 3, 224, 224)
        for amp in (False, True):
            @torch.inference_mode()
            def encode(amp: bool = amp) -> torch.Tensor:
                with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=amp):
                    return model.encode_image(pixels)

            encode()
            seconds = _timed(encode, 3 if not args.dry else 1, device)
            rows.append({"path": f"model only ({'bf16 autocast' if amp else 'fp32'}, device tensors)",
                         "batch": pixels.shape[0], "images_per_s": round(pixels.shape[0] / seconds, 1)})
    return {"model": name, "images": len(paths), "rows": rows}


def _timed(fn: Callable[[], Any], reps: int, device: str) -> float:
    """Mean seconds per call of ``fn`` over ``reps`` calls, the device synchronised around them."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    sync()
    return (time.perf_counter() - start) / reps


def _report(info: dict[str, Any]) -> None:
    print(f"## generation and scoring on {info['gpu'] or info['device']}" + (" (dry run: tiny configs)" if info["dry"] else ""))
    if "generate" in info:
        g = info["generate"]
        print(f"UNet {g['unet_params'] / 1e9:.2f} B params, {g['image_size']} px, {g['dtype']}; images/s:")
        steps = sorted({r["steps"] for r in g["rows"]})
        print("batch | " + " | ".join(f"{s} step(s)" for s in steps))
        for batch in sorted({r["batch"] for r in g["rows"]}):
            cells = {r["steps"]: r["images_per_s"] for r in g["rows"] if r["batch"] == batch}
            print(f"{batch} | " + " | ".join(str(cells[s]) for s in steps))
    if "score" in info:
        for row in info["score"]["rows"]:
            print(f"CLIP {info['score']['model']} {row['path']}: {row['images_per_s']} images/s")


if __name__ == "__main__":
    sys.exit(main())
