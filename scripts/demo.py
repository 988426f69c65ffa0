"""The offline demo: the whole LTGC pipeline in about a minute, with no network and no weights.

1. Draw a tiny long-tailed dataset of coloured shapes (6 classes, 40 ... 3 training images).
2. Pick the tail classes (fewer than 10 images) into ``tail.txt``.
3. Start the OpenAI-compatible simulator on loopback and run the generation agent against it
   (``python -m agent.run``) with a tiny, randomly initialised CLIP as the scorer.
4. Fine-tune on original + generated data with BalanceMix (``python -m trainer.train``), tiny CLIP again.

Everything the simulator says and draws is synthetic, and a randomly initialised CLIP scores noise: the demo
shows the machinery (graph, cache, traces, manifest, trainer), not accuracy. Run it twice: the second agent
run is answered entirely from the cache (0 requests).

    python -m scripts.demo [--out demo-run] [--latency-ms 20]
"""

from __future__ import annotations

from store.interrupt import exit_on_interrupt

if __name__ == "__main__":  # before the imports below: Ctrl-C while they load is one line, not a traceback
    exit_on_interrupt("scripts.demo", "run it again to continue (finished agent calls are cached)")

import argparse
import json
import random
import shutil
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from store.cli import OneLineParser

CLASSES = [
    ("red circle", 40),
    ("blue square", 24),
    ("green triangle", 14),
    ("yellow star", 8),
    ("purple ring", 5),
    ("orange cross", 3),
]
TEST_PER_CLASS = 10
TAIL_BELOW = 10
TINY_CLIP = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    out = Path(args.out)
    data = out / "data"
    if args.fresh and out.exists():
        shutil.rmtree(out)
    _make_dataset(data, seed=0)
    clip_cfg = out / "tiny-clip.json"
    clip_cfg.write_text(json.dumps(TINY_CLIP), encoding="utf-8")

    from agent.run import main as agent_main
    from scripts.sim.server import SimConfig, Simulator
    from trainer.train import main as train_main

    with Simulator(SimConfig(latency_ms=args.latency_ms, seed=0)) as sim:
        role_flags = []
        for role in ("lmm", "llm", "t2i"):
            # The simulator has no rate limit: lift the OpenAI-tier defaults (t2i: 5 images/min).
            role_flags += [f"--{role}-base-url", sim.base_url, f"--{role}-model", f"sim-{role}",
                           f"--{role}-per-minute", "100000", f"--{role}-max-in-flight", "16"]
        rc = agent_main([
            "--classes", str(data / "tail.txt"),
            "--train-list", str(data / "train.txt"), "--data-root", str(data),
            "--class-names", str(data / "classnames.txt"),
            "--out", str(out / "run"), "--run-id", "demo",
            # A randomly initialised CLIP gives cosines near 0: threshold 0 keeps about half of the images
            # and sends the rest through refinement, so every step of the graph runs.
            "--target-per-class", str(args.k), "--max-rounds", "2", "--threshold", "0.0",
            "--clip-model", str(clip_cfg), "--clip-pretrained", "none",
            *role_flags,
        ])
        stats = sim.stats()
    print(f"[demo] agent exit code {rc}; simulator requests: {stats.get('total')}")
    if rc not in (0, 1):
        return rc
    # The agent's rerun is a cache replay; the short training run simply starts over each time.
    shutil.rmtree(out / "train", ignore_errors=True)
    rc = train_main([
        "--train", str(data / "train.txt"), "--data-root", str(data),
        "--generated", str(out / "run" / "manifest.jsonl"),
        "--test", str(data / "test.txt"), "--class-names", str(data / "classnames.txt"),
        "--out", str(out / "train"), "--model", str(clip_cfg), "--pretrained", "none",
        "--mode", "balancemix", "--epochs", str(args.epochs), "--batch-size", "16",
        "--image-size", "32", "--workers", "0", "--many", "20", "--few", "10",
    ])
    if rc == 0:
        metrics = json.loads((out / "train" / "metrics.json").read_text(encoding="utf-8"))
        shown = {k: metrics.get(k) for k in ("overall", "many", "medium", "few")}
        print(f"[demo] trainer metrics: {json.dumps(shown)}")
        print(f"[demo] outputs: {out / 'run'} (manifest.jsonl, summary.json, traces.sqlite), {out / 'train'}")
    return rc


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = OneLineParser(prog="python -m scripts.demo", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="demo-run", help="output folder (default: demo-run)")
    p.add_argument("--latency-ms", type=float, default=20.0, help="simulated API latency (default: 20)")
    p.add_argument("--k", type=int, default=12, help="target images per tail class K_y (default: 12)")
    p.add_argument("--epochs", type=int, default=2, help="training epochs (default: 2)")
    p.add_argument("--fresh", action="store_true", help="delete --out first (otherwise reruns hit the cache)")
    return p.parse_args(argv)


def _make_dataset(root: Path, seed: int) -> None:
    """Coloured shapes on noisy backgrounds; ImageNet-LT style list files and a class-names file."""
    rng = random.Random(seed)
    train_lines, test_lines, names = [], [], []
    for label, (name, count) in enumerate(CLASSES):
        names.append(f"{label}\t{name}")
        for split, n, lines in (("train", count, train_lines), ("test", TEST_PER_CLASS, test_lines)):
            folder = root / split / f"c{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                rel = f"{split}/c{label}/{i:03d}.png"
                if not (root / rel).exists():
                    _draw(name, rng).save(root / rel)
                lines.append(f"{rel} {label}")
    (root / "train.txt").write_text("\n".join(train_lines) + "\n", encoding="utf-8")
    (root / "test.txt").write_text("\n".join(test_lines) + "\n", encoding="utf-8")
    (root / "classnames.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    tail = [f"{label}\t{name}" for label, (name, count) in enumerate(CLASSES) if count < TAIL_BELOW]
    (root / "tail.txt").write_text("# tail classes: fewer than 10 training images\n" + "\n".join(tail) + "\n",
                                   encoding="utf-8")


def _draw(name: str, rng: random.Random) -> Image.Image:
    colour, shape = name.split()
    rgb = {"red": (220, 40, 40), "blue": (40, 60, 220), "green": (40, 180, 60), "yellow": (230, 210, 40),
           "purple": (140, 50, 170), "orange": (240, 140, 30)}[colour]
    img = Image.new("RGB", (32, 32), tuple(rng.randrange(40, 120) for _ in range(3)))
    d = ImageDraw.Draw(img)
    x, y, s = rng.randrange(4, 12), rng.randrange(4, 12), rng.randrange(12, 20)
    box = (x, y, x + s, y + s)
    if shape == "circle":
        d.ellipse(box, fill=rgb)
    elif shape == "square":
        d.rectangle(box, fill=rgb)
    elif shape == "triangle":
        d.polygon([(x, y + s), (x + s, y + s), (x + s // 2, y)], fill=rgb)
    elif shape == "ring":
        d.ellipse(box, outline=rgb, width=3)
    elif shape == "cross":
        d.line((x, y, x + s, y + s), fill=rgb, width=3)
        d.line((x, y + s, x + s, y), fill=rgb, width=3)
    else:  # star: a rotated square over a square
        d.rectangle(box, fill=rgb)
        d.polygon([(x + s // 2, y - 3), (x + s + 3, y + s // 2), (x + s // 2, y + s + 3), (x - 3, y + s // 2)],
                  fill=rgb)
    return img


if __name__ == "__main__":
    sys.exit(main())
