"""A tiny real ``agent.run`` against the loopback simulator: its inputs and its command line.

Used by the benchmarks (scripts/bench/bench_budget.py) and the observe/control tests (traces, report,
budget, dry run), so neither reaches into the other. Everything is local and small: three classes with
1-2 real 16x16 images each, K = 5, a randomly initialised ~1M-parameter open_clip config. Model names are
real OpenAI names so the packaged price table prices every call.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

__all__ = ["CLASSES", "MODELS", "TINY_CLIP", "make_inputs", "run_args"]

TINY_CLIP = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}
CLASSES = {"red fox": 2, "snowy owl": 1, "axolotl": 1}
MODELS = {"lmm": "gpt-4o", "llm": "gpt-4o-mini", "t2i": "gpt-image-1"}


def make_inputs(root: Path) -> dict[str, Path]:
    """Write tail.txt, an ImageFolder tree and the tiny CLIP config under ``root``."""
    images = root / "images"
    for index, (name, count) in enumerate(CLASSES.items()):
        folder = images / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", (16, 16), (40 * index + 20 * i, 90, 160)).save(folder / f"{i}.png")
    tail = root / "tail.txt"
    tail.write_text("".join(f"{name}\n" for name in CLASSES), encoding="utf-8")
    clip = root / "tiny-clip.json"
    clip.write_text(json.dumps(TINY_CLIP), encoding="utf-8")
    return {"images": images, "tail": tail, "clip": clip}


def run_args(inputs: dict[str, Path], out: Path, base_url: str, *, k: int = 5, rounds: int = 1,
             threshold: float = 0.0, extra: tuple[str, ...] = ()) -> list[str]:
    """``python -m agent.run`` arguments for the tiny run (threshold 0.0: raw cosine rarely goes below)."""
    roles: list[str] = []
    for role, model in MODELS.items():
        # billing priced: the simulator stands in for the paid API, so the price table applies
        roles += [f"--{role}-base-url", base_url, f"--{role}-model", model, f"--{role}-per-minute", "100000",
                  f"--{role}-billing", "priced"]
    return [
        "--classes", str(inputs["tail"]), "--images", str(inputs["images"]), "--out", str(out),
        "--run-id", "obs", "--target-per-class", str(k), "--max-rounds", str(rounds),
        "--threshold", str(threshold), "--clip-model", str(inputs["clip"]), "--clip-pretrained", "none",
        *roles, *extra,
    ]
