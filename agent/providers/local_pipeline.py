"""The diffusers side of local image generation: load a pipeline, render one fixed-shape batch.

Contract (used by agent/providers/local_t2i.py, which owns the queue, admission and traces):

- Importing this module is free: torch, diffusers and transformers are imported inside the functions, so
  ``python -m agent.run --help`` and every run with ``provider = "openai"`` never load them.
- :func:`missing_packages` names the packages of the ``local`` extra that cannot be imported (no import).
- :func:`resolve_devices` turns ``--t2i-devices`` into device names (``None`` -> ``cuda:0`` when CUDA is
  there, else ``cpu``); a device this machine lacks is a :class:`LocalPipelineError`.
- :func:`load` builds ``DiffusionPipeline.from_pretrained(model, dtype=...)`` on one device — a hub id or a
  local folder take the same code path — once per ``(model, device)`` per process; bf16 on CUDA, fp32
  elsewhere. A model that cannot be loaded is a :class:`LocalPipelineError` with one line.
- :func:`render` runs one forward pass over exactly ``pad_to`` prompts (the real ones, then copies of the
  last): a fixed batch shape makes each image independent of which other prompts shared its batch (a
  different batch size changes the kernels' rounding, and so a few pixels). Each prompt gets its own CPU
  ``torch.Generator`` seeded with its seed, so its starting noise is the same on any device. Returns one
  PNG per real prompt, or ``None`` where the pipeline's safety checker blanked the image.
"""

from __future__ import annotations

import importlib.util
import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.providers.config import ConfigError
from store.errors import UsageError
from store.hub import prepare_hub_files

__all__ = ["EXTRA_PACKAGES", "LocalPipelineError", "RenderOptions", "dtype_name", "is_out_of_memory", "load",
           "missing_packages", "render", "resolve_devices"]

EXTRA_PACKAGES = ("diffusers", "transformers", "accelerate")  # pyproject.toml: the "local" extra
_LOADED: dict[tuple[str, str], Any] = {}
EXAMPLE_HUB_ID = "stabilityai/sdxl-turbo"  # named in the error line, unless it is the id that failed
_LOAD_LOCK = threading.Lock()


class LocalPipelineError(ConfigError):
    """A pipeline that cannot be loaded or a device that is not there (one line): the t2i role's settings
    are wrong, so it is a :class:`ConfigError` (exit 2 from ``agent.run``)."""


@dataclass(frozen=True)
class RenderOptions:
    """Per-call settings; ``None`` leaves the pipeline's own default."""

    steps: int | None = None
    guidance: float | None = None
    width: int | None = None
    height: int | None = None


def missing_packages() -> list[str]:
    """The extra's packages that are not installed: ``[]`` when ``pip install -e ".[local]"`` was run."""
    return [name for name in EXTRA_PACKAGES if importlib.util.find_spec(name) is None]


def dtype_name(device: str) -> str:
    """``dtype_name("cuda:1") -> "bfloat16"``, ``dtype_name("cpu") -> "float32"`` (CPUs lack fast bf16 here)."""
    return "bfloat16" if device.startswith("cuda") else "float32"


def resolve_devices(spec: str | None) -> list[str]:
    """``None`` -> ``["cuda:0"]`` or ``["cpu"]``; ``"cuda"`` -> ``"cuda:0"``; checks that each device exists."""
    import torch

    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if spec is None:
        return ["cuda:0" if cuda else "cpu"]
    devices = ["cuda:0" if name == "cuda" else name for name in spec.split(",")]
    for name in devices:
        if name.startswith("cpu:"):
            raise LocalPipelineError(f"t2i devices {spec!r}: {name} names a CPU actor of a Ray cluster (with --ray); "
                                     "in this process use cpu")
        if name.startswith("cuda") and int(name.split(":")[1]) >= cuda:
            raise LocalPipelineError(f"t2i devices {spec!r}: {name} is not here (this machine has {cuda} CUDA "
                                     "device(s)); list devices that exist, e.g. --t2i-devices cpu")
        if name == "mps" and not torch.backends.mps.is_available():
            raise LocalPipelineError(f"t2i devices {spec!r}: mps is not available on this machine")
    if len(set(devices)) != len(devices):
        raise LocalPipelineError(f"t2i devices {spec!r}: a device is listed twice")
    return devices


def load(model: str, device: str) -> Any:
    """The pipeline for ``model`` on ``device``, loaded once per process (thread-safe)."""
    with _LOAD_LOCK:
        key = (model, device)
        if key not in _LOADED:
            _LOADED[key] = _load(model, device)
        return _LOADED[key]


def _load(model: str, device: str) -> Any:
    import torch
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    # Loading chatter (progress bars, "is outdated" notes) would bury the run's own display.
    for lib in (diffusers_logging, transformers_logging):
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    dtype = getattr(torch, dtype_name(device))
    if not Path(model).expanduser().is_dir():  # a hub id: not cached and no network is one line, at once
        try:
            prepare_hub_files(f"t2i model {model!r}", model, None, fix=(
                "download it once with network (HF_HUB_OFFLINE=1 then keeps later runs off the network), or give "
                "a local folder holding model_index.json"))
        except UsageError as exc:
            raise LocalPipelineError(str(exc)) from None
    try:
        pipe = DiffusionPipeline.from_pretrained(model, dtype=dtype)
        pipe = pipe.to(device)
    except Exception as exc:  # any failure here is the model setting's: say which, and how to fix it
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        example = "" if model == EXAMPLE_HUB_ID else f" such as {EXAMPLE_HUB_ID}"
        raise LocalPipelineError(
            f"t2i model {model!r}: cannot load a diffusers pipeline on {device} ({type(exc).__name__}: {detail}); "
            f"give a diffusers hub id{example} (downloaded on first use) or a local folder "
            "holding model_index.json") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe


def render(pipe: Any, prompts: Sequence[str], seeds: Sequence[int], options: RenderOptions,
           pad_to: int) -> list[bytes | None]:
    """One forward pass of exactly ``max(pad_to, len(prompts))`` prompts; a PNG per real prompt."""
    import torch

    n = len(prompts)
    width = max(pad_to, n)
    batch = [*prompts, *[prompts[-1]] * (width - n)]
    batch_seeds = [*seeds, *[seeds[-1]] * (width - n)]
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in batch_seeds]
    kwargs: dict[str, Any] = {"prompt": batch, "generator": generators, "output_type": "pil"}
    for name, value in (("num_inference_steps", options.steps), ("guidance_scale", options.guidance),
                        ("width", options.width), ("height", options.height)):
        if value is not None:
            kwargs[name] = value
    with torch.inference_mode():
        out = pipe(**kwargs)
    flags = getattr(out, "nsfw_content_detected", None) or [False] * width
    return [None if flags[i] else _png(out.images[i]) for i in range(n)]


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA (or other accelerator) out-of-memory error: the batch was too large for the device."""
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(exc, oom) or "out of memory" in str(exc).lower()


def free_memory(device: str) -> None:
    """Give cached blocks back after an out-of-memory error, so the halved batch starts from a clean pool."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def _png(image: Any) -> bytes:
    # PIL writes no timestamp into a PNG: the same pixels give the same bytes, hence the same sha256.
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
