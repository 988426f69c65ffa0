"""The Ray path's cost on one GPU: a diffusers batch rendered in-process against the same batch on one Ray actor
(agent/providers/cluster.py) on the same GPU — seconds per batch, images/s, the overhead per batch, the bare
round trip of an empty actor call, and whether the PNG bytes are identical.

The pipeline is the tests' tiny random diffusers pipeline (scripts/sim/tiny_diffusers.py: no weights, no
network) at ``--size`` px, so the forward pass is short and the Ray overhead (prompts out, PNGs back, one
actor call) stands out; the images/s are this tiny model's, not SDXL's — the overhead per batch is what
carries over to a real model (its PNGs are larger: see ``png_kb``).

    python -m scripts.bench.gpu_bench_ray --json out.json          # on a GPU machine (scripts/gpu_bench.sh run)
    python -m scripts.bench.gpu_bench_ray --dry                    # CPU, fewer batches: checks the code path
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", help="write the results here")
    p.add_argument("--dry", action="store_true", help="CPU, 2 batches per size: checks the code path")
    p.add_argument("--batches", type=int, default=20, help="timed batches per batch size")
    p.add_argument("--sizes", default="1,4,16", help="batch sizes")
    p.add_argument("--size", type=int, default=256, help="image side in px (a multiple of 8)")
    p.add_argument("--steps", type=int, default=4)
    args = p.parse_args(argv)
    results = run(args)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0 if results["identical"] else 1


def run(args: argparse.Namespace) -> dict[str, Any]:
    import ray
    import torch

    from agent.providers import local_pipeline
    from agent.providers.cluster import RayPool
    from agent.providers.config import load_providers_config
    from agent.providers.local_pipeline import RenderOptions
    from scripts.sim.tiny_diffusers import build

    cuda = torch.cuda.is_available() and not args.dry
    device, actor_device = ("cuda:0", "cuda:0") if cuda else ("cpu", "cpu:0")
    batches = 2 if args.dry else args.batches
    sizes = [int(s) for s in args.sizes.split(",")]
    options = RenderOptions(steps=args.steps, guidance=1.0, width=args.size, height=args.size)
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
                           "ray": ray.__version__, "size": args.size, "steps": args.steps, "batches": batches,
                           "dtype": local_pipeline.dtype_name(device), "by_batch": {}}
    with tempfile.TemporaryDirectory() as tmp:
        model = str(build(Path(tmp) / "pipe"))
        pipe = local_pipeline.load(model, device)
        config = load_providers_config(env={}, overrides={"t2i": {"provider": "diffusers", "model": model,
                                                                  "devices": actor_device}})
        started = time.perf_counter()
        fresh = not ray.is_initialized()  # a test's Ray instance is used as it is
        if fresh:
            ray.init(num_cpus=2, num_gpus=1 if cuda else 0, include_dashboard=False, log_to_driver=False,
                     configure_logging=False, object_store_memory=512 * 1024 * 1024)
        pool = RayPool.start("local", config)
        backend = pool.render_backend()
        remote = backend.load(model, pool.actors[0].label)
        out["ray_start_s"] = round(time.perf_counter() - started, 2)
        try:
            out["empty_call_ms"] = _empty_call_ms(ray, pool.actors[0].handle, 10 if args.dry else 200)
            identical = True
            for size in sizes:
                prompts = [f"a photo of the class fox, number {i}" for i in range(size)]
                seeds = list(range(1000, 1000 + size))

                def here(prompts: list[str] = prompts, seeds: list[int] = seeds) -> list[bytes | None]:
                    return local_pipeline.render(pipe, prompts, seeds, options, len(prompts))

                def there(prompts: list[str] = prompts, seeds: list[int] = seeds) -> list[bytes | None]:
                    return backend.render(remote, prompts, seeds, options, len(prompts))

                a_png, a_s = _timed(here, batches, cuda)
                b_png, b_s = _timed(there, batches, cuda)
                same = [_sha(x) for x in a_png] == [_sha(x) for x in b_png]
                identical = identical and same
                out["by_batch"][str(size)] = {
                    "in_process_s_per_batch": round(a_s, 5), "ray_s_per_batch": round(b_s, 5),
                    "overhead_ms_per_batch": round(1000 * (b_s - a_s), 2),
                    "in_process_images_per_s": round(size / a_s, 1), "ray_images_per_s": round(size / b_s, 1),
                    "png_kb": round(sum(len(x or b"") for x in a_png) / size / 1024, 1), "identical_png": same}
                print(f"batch {size}: in-process {a_s * 1000:.1f} ms, ray {b_s * 1000:.1f} ms per batch "
                      f"(identical PNGs: {same})", file=sys.stderr, flush=True)
            out["identical"] = identical
        finally:
            pool.close()
            if fresh:
                ray.shutdown()
    return out


def _timed(fn: Callable[[], list[bytes | None]], batches: int, cuda: bool) -> tuple[list[bytes | None], float]:
    """The last batch's PNGs and the median seconds per batch, after two warm-up batches."""
    import torch

    pngs = fn()
    fn()
    times = []
    for _ in range(batches):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        pngs = fn()
        times.append(time.perf_counter() - start)
    return pngs, statistics.median(times)


def _empty_call_ms(ray: Any, handle: Any, n: int) -> float:
    ray.get(handle.where.remote())
    start = time.perf_counter()
    for _ in range(n):
        ray.get(handle.where.remote())
    return round(1000 * (time.perf_counter() - start) / n, 3)


def _sha(png: bytes | None) -> str:
    return hashlib.sha256(png or b"").hexdigest()


if __name__ == "__main__":
    sys.exit(main())
