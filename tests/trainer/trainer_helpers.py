"""Tiny synthetic long-tailed data for the trainer tests: 3 classes of coloured 16x16 PNGs.

Layout under a root folder: ``img/<split>/<k>_<i>.png``, list files ``train.txt`` / ``test.txt``,
``classnames.txt``, and a generated-data manifest ``gen/manifest.jsonl``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from store.manifest import ManifestRow, write_manifest

TINY_CONFIG = Path(__file__).resolve().parents[2] / "trainer" / "model_configs" / "ltgc-tiny-vit.json"
NAMES = ["red square", "green square", "blue square"]
COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]


@dataclass(frozen=True)
class TinyData:
    root: Path
    train: Path
    test: Path
    names: Path
    generated: Path
    train_counts: tuple[int, ...]


def _image(path: Path, label: int, rng: np.random.Generator) -> str:
    pixels = np.clip(np.array(COLOURS[label]) + rng.normal(0, 30, (16, 16, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_tiny_data(root: Path, train_counts: tuple[int, ...] = (12, 6, 2), test_per_class: int = 4,
                   gen_per_class: int = 4) -> TinyData:
    rng = np.random.default_rng(0)
    lines = []
    for k, n in enumerate(train_counts):
        for i in range(n):
            _image(root / "img" / "train" / f"{k}_{i}.png", k, rng)
            lines.append(f"img/train/{k}_{i}.png {k}")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    lines = []
    for k in range(len(train_counts)):
        for i in range(test_per_class):
            _image(root / "img" / "test" / f"{k}_{i}.png", k, rng)
            lines.append(f"img/test/{k}_{i}.png {k}")
    (root / "test.txt").write_text("\n".join(lines) + "\n")
    (root / "classnames.txt").write_text("".join(f"{k}\t{n}\n" for k, n in enumerate(NAMES)))
    rows = []
    for k in range(len(train_counts)):
        for i in range(gen_per_class):
            rel = f"images/{k}_{i}.png"
            sha = _image(root / "gen" / rel, k, rng)
            rows.append(ManifestRow(rel, k, NAMES[k], "generated", sha, description=f"A photo of {NAMES[k]}.",
                                    score=0.9, round=0, run_id="t"))
    write_manifest(root / "gen" / "manifest.jsonl", rows)
    return TinyData(root, root / "train.txt", root / "test.txt", root / "classnames.txt",
                    root / "gen" / "manifest.jsonl", train_counts)


def train_argv(data: TinyData, out: Path, *extra: str) -> list[str]:
    """A complete, fast trainer command line for the tiny data and the tiny model config."""
    return ["--train", str(data.train), "--test", str(data.test), "--class-names", str(data.names),
            "--out", str(out), "--mode", "plain", "--model", str(TINY_CONFIG), "--pretrained", "none", "--epochs", "1",
            "--batch-size", "8", "--workers", "0", "--threads", "1", "--device", "cpu", "--many", "10", "--few", "4",
            *extra]
