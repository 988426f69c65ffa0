"""Export wall time and size per format, and the trainer's read speed for each, on a 10^4-image run folder.

    python -m scripts.bench.bench_export [--images 10000] [--classes 100] [--side 64] [--dir DIR]

The run folder is made here, not by the agent (10^4 simulator images would take the agent most of an hour of
CLIP scoring on 2 cores): ``config.json``, ``summary.json``, ``manifest.jsonl`` and ``images/<slug>/<sha>.png``
of ``--side`` px noise PNGs (incompressible, so MB/s are honest), the layout ``agent.run`` leaves.
For each format: ``python -m agent.export`` in a subprocess (wall time, images/s, MB on disk), a second
export (the idempotent no-op), then the trainer's reader: ``read_listing`` (index) time, and images/s of
``ImageLoader.load`` (decode to RGB) over a random permutation of all samples, the access pattern of
BalanceMix's samplers — against the manifest (one PNG file per image) as the baseline; and parquet once more
with a 16 MB row-group cache, as a dataset much larger than the cache would read.
Prints a Markdown table (BENCHMARKS.md, "Exports").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from store.manifest import ManifestRow, write_manifest
from store.slug import slugify

FORMATS = ("imagefolder", "parquet", "webdataset")


def make_run(root: Path, n: int, classes: int, side: int) -> Path:
    """A finished run folder of ``n`` generated images over ``classes`` classes (see the module docstring)."""
    run = root / "run"
    rng = np.random.default_rng(0)
    names = [f"class {k:03d}" for k in range(classes)]
    rows = []
    for i in range(n):
        k = i % classes
        png = run / "tmp.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(png)
        sha = hashlib.sha256(png.read_bytes()).hexdigest()
        rel = f"images/{slugify(names[k])}/{sha}.png"
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        png.rename(run / rel)
        rows.append(ManifestRow(rel, k, names[k], "generated", sha, description=f"A photo of the class {names[k]}.",
                                score=0.3, round=0, run_id="bench"))
    write_manifest(run / "manifest.jsonl", rows)
    providers = {role: {"model": f"bench-{role}", "base_url": "http://127.0.0.1:8000/v1"} for role in ("lmm", "llm", "t2i")}
    config = {"run_id": "bench", "run": {"target_per_class": n // classes, "threshold": 0.2, "score": "cosine",
                                         "max_rounds": 3, "clip_model": "ViT-B-32", "clip_pretrained": "openai"},
              "providers": providers, "classes": [{"name": c, "label": k, "M_y": 0} for k, c in enumerate(names)]}
    (run / "config.json").write_text(json.dumps(config))
    summary = {"run_id": "bench", "classes": {c: {"label": k, "rejected": 0, "template": f"A photo of the class {c}."}
                                              for k, c in enumerate(names)}, "totals": {"cost_usd": 0.0}}
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def _export(run: Path, fmt: str, out: Path) -> float:
    t0 = time.perf_counter()
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "agent.export", str(run), "--format", fmt, "--out", str(out)],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _read(spec: Path, names: Path) -> tuple[float, float, int]:
    """(index seconds, decoded images/s over a random permutation, samples) for the trainer's reader."""
    from trainer.data import ImageLoader
    from trainer.samples import load_classes, read_listing

    t0 = time.perf_counter()
    classes = load_classes(str(names), str(spec))
    samples = read_listing(spec, classes).samples
    index_s = time.perf_counter() - t0
    order = list(range(len(samples)))
    random.Random(0).shuffle(order)
    loader = ImageLoader(0)
    t0 = time.perf_counter()
    for i in order:
        loader.load(samples[i])
    return index_s, len(samples) / (time.perf_counter() - t0), len(samples)


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--side", type=int, default=64)
    p.add_argument("--dir", type=Path, default=None)
    args = p.parse_args(argv)
    root = args.dir or Path(tempfile.mkdtemp(prefix="bench-export-"))
    t0 = time.perf_counter()
    run = make_run(root, args.images, args.classes, args.side)
    print(f"run folder: {args.images} images, {_size_mb(run / 'images'):.1f} MB of PNG, made in "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    names = root / "names.txt"
    names.write_text("".join(f"class {k:03d}\n" for k in range(args.classes)))
    index_s, ips, n = _read(run / "manifest.jsonl", names)
    lines = ["| input | export wall s | export images/s | size MB | again (no-op) s | trainer index s | "
             "trainer read images/s (random order) |", "|---|---|---|---|---|---|---|",
             f"| manifest.jsonl + PNG files (baseline) | – | – | {_size_mb(run / 'images'):.1f} | – | {index_s:.2f} | "
             f"{ips:.0f} |"]
    for fmt in FORMATS:
        out = root / f"ex-{fmt}"
        wall = _export(run, fmt, out)
        again = _export(run, fmt, out)
        index_s, ips, got = _read(out, names)
        assert got == n, (fmt, got, n)
        lines.append(f"| {fmt} | {wall:.1f} | {n / wall:.0f} | {_size_mb(out):.1f} | {again:.1f} | {index_s:.2f} | "
                     f"{ips:.0f} |")
    # The 10^5-10^6 regime on a 10^4 run: a parquet input 8x larger than the per-process row-group cache.
    import trainer.formats as formats

    formats.ROW_GROUP_CACHE_BYTES = 16 * 1024 * 1024
    formats._groups.clear()
    formats._group_bytes.clear()
    index_s, ips, _ = _read(root / "ex-parquet", names)
    lines.append(f"| parquet, row-group cache 16 MB (data ~8x the cache) | – | – | – | – | {index_s:.2f} | {ips:.0f} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
