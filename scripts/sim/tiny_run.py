"""A tiny real ``agent.run`` against the loopback simulator: its inputs and its command line.

Used by the benchmarks (scripts/bench/bench_budget.py) and the observe/control tests (traces, report,
budget, dry run), so neither reaches into the other. Everything is local and small: three classes with
1-2 real 16x16 images each, K = 5, a randomly initialised ~1M-parameter open_clip config. Model names are
real OpenAI names so the packaged price table prices every call.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image

__all__ = ["CLASSES", "E2E_CLASSES", "MODELS", "TINY_CLIP", "agent_argv", "make_dataset", "make_inputs", "run_args"]

TINY_CLIP = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}
CLASSES = {"red fox": 2, "snowy owl": 1, "axolotl": 1}
MODELS = {"lmm": "gpt-4o", "llm": "gpt-4o-mini", "t2i": "gpt-image-1"}
E2E_CLASSES = {"red fox": 1, "snow owl": 2, "sea turtle": 3}  # the end-to-end tests' set: class -> M_y real images


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


def make_dataset(root: Path, classes: dict[str, int] = E2E_CLASSES) -> Path:
    """``root/images/<class>/*.png`` (tiny, distinct colours), ``root/tail.txt`` and ``root/tiny-clip.json``."""
    rng = random.Random(0)
    for name, count in classes.items():
        folder = root / "images" / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", (24, 24), tuple(rng.randrange(256) for _ in range(3))).save(folder / f"{i}.png")
    (root / "tail.txt").write_text("# tail classes\n" + "\n".join(classes) + "\n", encoding="utf-8")
    (root / "tiny-clip.json").write_text(json.dumps(TINY_CLIP), encoding="utf-8")
    return root


def agent_argv(data: Path, out: Path, base_url: str, *extra: str, k: int = 6) -> list[str]:
    """Flags for ``python -m agent.run`` against the simulator, with limits that never slow a run down."""
    argv = ["--classes", str(data / "tail.txt"), "--images", str(data / "images"), "--out", str(out),
            "--run-id", "t1", "--target-per-class", str(k), "--threshold", "-1",
            "--clip-model", str(data / "tiny-clip.json"), "--clip-pretrained", "none"]
    for role in ("lmm", "llm", "t2i"):
        argv += [f"--{role}-base-url", base_url, f"--{role}-model", f"sim-{role}",
                 f"--{role}-per-minute", "100000", f"--{role}-max-attempts", "2",
                 f"--{role}-backoff-initial-s", "0.01", f"--{role}-timeout-s", "20"]
    return [*argv, *extra]
