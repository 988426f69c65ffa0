"""Local text-to-image: the ``t2i`` role on a diffusers pipeline in this process (``provider = "diffusers"``).

Contract (the :class:`agent.providers.transport.Transport` seam; the providers keep cache, blobs, traces and pricing):

- :func:`local_image_body` is the request as keyed and traced: ``model``, ``prompt``, ``n``, ``provider``,
  ``size``, ``steps``, ``guidance``, ``seed`` — so changing any of them makes new images, and a rerun with the
  same ones is all cache hits. :func:`item_seed` derives each image's seed from its cache key (which holds
  the body, the sample index and the cache namespace): same inputs, same image.
- :class:`DiffusersTransport` queues every class's renders in one queue. One worker per device
  (``--t2i-devices cuda:0,cuda:1``; default ``cuda:0`` or ``cpu``) takes up to ``batch_size`` of them
  (lingering ``GATHER_S`` for a full batch), admits each (``Outbound.admit``: stop check + budget) right
  before its batch starts, and runs one forward pass off the event loop (``asyncio.to_thread``). The batch
  is always padded to ``batch_size`` (agent/providers/local_pipeline.py: images do not depend on their batch-mates).
- A CUDA out-of-memory error halves the batch size for the rest of the process, logs one line saying so,
  and retries the same prompts; at batch size 1 it is the items' final ``bad_request`` error. Any other
  pipeline error fails that batch's items (``bad_request``); a blanked image (safety checker) is ``refused``.
- A device whose backend says it was lost (``backend.is_lost(exc)``: a Ray actor or node gone, see
  agent/providers/cluster.py) retires its worker: the batch it held goes back to the head of the queue for
  the other workers (each item is admitted once, whatever the re-dispatch); when no worker is left, the
  queued items fail with ``bad_request`` naming the lost devices.
- Each answered call gets ``attempts`` (forward passes it was part of), ``queue_s`` (waiting for its batch),
  ``server_s`` (its batch's forward pass) and ``meta = {"gpu_s", "device", "batch", "padded_to", "seed"}``
  where ``gpu_s`` is its share of the device time (forward time / real images in the batch; on a CPU run
  these are CPU seconds): summed over a run's rows it is the device time the run used. Cost is 0.
- :func:`open_local_transports` (the runner) builds and loads one per local role up front, off the loop, so a
  bad ``--t2i-model`` or device is a :class:`agent.providers.config.ConfigError` before any paid chat call; a transport
  built without it (``Providers.open``'s default) loads on its first ``send``. :func:`preload` (the CLI)
  loads them earlier still, before the run folder is created; loading is once per process either way.
- :func:`check_local_role` (preflight, no heavy import): the ``local`` extra is installed and the model is a
  folder with ``model_index.json`` or looks like a hub id — else one :class:`ConfigError` line.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.providers import local_pipeline
from agent.providers.config import ROLES, ConfigError, ProvidersConfig, RoleConfig, is_local_role
from agent.providers.local_pipeline import RenderOptions
from agent.providers.retry import ProviderError
from agent.providers.transport import Outbound

__all__ = ["DEFAULT_BATCH_SIZE", "GATHER_S", "DiffusersTransport", "LocalStats", "check_local_role", "item_seed",
           "local_image_body", "open_local_transports", "preload"]

DEFAULT_BATCH_SIZE = 4
# How long a worker waits for a full batch once it has one prompt: renders of a class arrive together (the
# render node fans them out at once), a few milliseconds apart, each after its cache look-up.
GATHER_S = 0.05
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def local_image_body(cfg: RoleConfig, prompt: str) -> dict[str, Any]:
    """The request of one local image, as keyed and traced (every setting that changes the pixels)."""
    return {"model": cfg.model, "prompt": prompt, "n": 1, "provider": cfg.provider, "size": cfg.image_size,
            "steps": cfg.steps, "guidance": cfg.guidance, "seed": cfg.seed or 0}


def item_seed(key: str) -> int:
    """The generator seed of one image: the first 63 bits of its cache key (a sha256 hex digest).

    >>> item_seed("00000000000000ff" + "0" * 48)
    255
    """
    return int(key[:16], 16) & (2**63 - 1)


def check_local_role(role: str, cfg: RoleConfig) -> None:
    """Preflight for a local role (see the module docstring); imports nothing heavy."""
    absent = local_pipeline.missing_packages()
    if absent:
        raise ConfigError(f"{role}: provider 'diffusers' needs the optional packages {', '.join(absent)}; install "
                          "them with: pip install -e \".[local]\" (diffusers, transformers, accelerate)")
    path = Path(cfg.model).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ConfigError(f"{role} model {cfg.model!r}: the folder has no model_index.json; give a folder "
                              "written by a pipeline's save_pretrained, or a hub id")
    elif cfg.model.startswith((".", "/", "~")) or not _HUB_ID.match(cfg.model):
        raise ConfigError(f"{role} model {cfg.model!r}: no such folder, and not a hub id (like "
                          "stabilityai/sdxl-turbo); check the path")


@dataclass
class _Job:
    call: Outbound
    prompt: str
    seed: int
    future: asyncio.Future[dict[str, Any]]
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class LocalStats:
    """What the transport did in this process: shown in the closing log line, read by tests."""

    images: int = 0
    forward_passes: int = 0
    device_s: float = 0.0
    halvings: int = 0


class DiffusersTransport:
    """The batching queue in front of one pipeline per device (see the module docstring)."""

    def __init__(self, cfg: RoleConfig, *, log: Callable[[str], None] | None = None, backend: Any = None) -> None:
        self.cfg = cfg
        self.batch_size = cfg.batch_size or DEFAULT_BATCH_SIZE
        self.options = RenderOptions(steps=cfg.steps, guidance=cfg.guidance, **_size(cfg.image_size))
        self.stats = LocalStats()
        self._backend = backend or local_pipeline  # load / render / is_out_of_memory / free_memory / devices
        self._log = log or _stderr
        self._pipes: dict[str, Any] = {}
        self._queue: deque[_Job] = deque()
        self._wake: asyncio.Event | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._loading: asyncio.Lock | None = None
        self._lost: list[str] = []  # devices whose worker retired (backend.is_lost)

    async def load(self) -> None:
        """Load one pipeline per device, concurrently and off the loop; ``ConfigError`` when that fails."""
        if self._loading is None:
            self._loading = asyncio.Lock()
        async with self._loading:
            if self._pipes:
                return
            # A model or device that does not load raises LocalPipelineError, a ConfigError (agent/errors.py).
            devices = await asyncio.to_thread(self._backend.resolve_devices, self.cfg.devices)
            pipes = await asyncio.gather(*(asyncio.to_thread(self._backend.load, self.cfg.model, d)
                                           for d in devices))
            self._pipes = dict(zip(devices, pipes, strict=True))

    async def send(self, call: Outbound) -> dict[str, Any]:
        await self.load()
        if self._wake is None:  # built inside the running loop, with the workers
            self._wake = asyncio.Event()
            self._workers = [asyncio.create_task(self._work(device)) for device in self._pipes]
        if self._lost and len(self._lost) == len(self._pipes):
            raise self._all_lost()
        job = _Job(call, str(call.body["prompt"]), item_seed(call.key), asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._wake.set()
        return await job.future

    async def close(self) -> None:
        """Stop the workers; fail what is still queued (nothing is, at the end of a run); log the totals."""
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while self._queue:
            job = self._queue.popleft()
            if not job.future.done():
                job.future.set_exception(ProviderError("stopped", "the run ended before this image was rendered",
                                                       attempts=0))
        if self.stats.forward_passes:
            s = self.stats
            self._log(f"t2i (diffusers {self.cfg.model}): {s.images} image(s) in {s.forward_passes} forward "
                      f"pass(es) on {', '.join(self._pipes)}, {s.device_s:.1f} device-s")

    # ------------------------------------------------------------------------------------------ worker
    async def _work(self, device: str) -> None:
        while True:
            batch = await self._take()
            admitted = [job for job in batch if self._admit(job)]
            try:
                alive = await self._render(device, admitted)
            except Exception as exc:  # a bug here must fail its items, never leave their callers waiting
                for job in admitted:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            if not alive:
                return

    def _retire(self, device: str, jobs: list[_Job], exc: BaseException) -> None:
        """``device`` is gone: its unfinished jobs go back to the head of the queue for the other workers."""
        self._lost.append(device)
        live = len(self._pipes) - len(self._lost)
        self._log(f"t2i: {device} was lost ({type(exc).__name__}); its batch of {len(jobs)} goes to the "
                  f"{live} device(s) left")
        for job in jobs:
            job.queued_at = time.perf_counter()  # its wait from here on is queue time again
        self._queue.extendleft(reversed(jobs))
        if not live:
            error = self._all_lost()
            while self._queue:
                job = self._queue.popleft()
                if not job.future.done():
                    job.future.set_exception(error)
        elif self._wake is not None:
            self._wake.set()

    def _all_lost(self) -> ProviderError:
        return ProviderError("bad_request", f"every render device was lost ({', '.join(self._lost)}); check the "
                             "cluster, then continue with --resume", attempts=0)

    async def _take(self) -> list[_Job]:
        """Up to ``batch_size`` live jobs: waits for one, then up to ``GATHER_S`` for a full batch."""
        assert self._wake is not None
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            deadline = time.perf_counter() + GATHER_S
            while len(self._queue) < self.batch_size and (left := deadline - time.perf_counter()) > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), left)
            batch: list[_Job] = []
            while self._queue and len(batch) < self.batch_size:
                job = self._queue.popleft()
                if not job.future.done():  # its caller was cancelled while it waited
                    batch.append(job)
            if batch:
                return batch

    def _admit(self, job: _Job) -> bool:
        """Stop check + budget, right before the job's batch starts; a refusal ends that job only."""
        try:
            job.call.admit()
        except ProviderError as exc:
            job.future.set_exception(exc)
            return False
        job.call.row.queue_s += time.perf_counter() - job.queued_at
        return True

    async def _render(self, device: str, jobs: list[_Job]) -> bool:
        """Render ``jobs`` on ``device``; False when the device was lost (its jobs are back in the queue)."""
        pending = list(jobs)
        while pending:
            size = self.batch_size
            chunk, pending = pending[:size], pending[size:]
            for job in chunk:
                job.call.row.attempts += 1
            started = time.perf_counter()
            try:
                pngs = await asyncio.to_thread(self._backend.render, self._pipes[device], [j.prompt for j in chunk],
                                               [j.seed for j in chunk], self.options, size)
            except Exception as exc:  # noqa: BLE001 - the pipeline's failure is these items' answer
                if getattr(self._backend, "is_lost", _never)(exc):
                    self._retire(device, [j for j in chunk + pending if not j.future.done()], exc)
                    return False
                if self._backend.is_out_of_memory(exc) and size > 1:
                    self._halve(device, size)
                    pending = chunk + pending
                    continue
                self._fail(chunk, exc, size)
                continue
            self._answer(device, chunk, pngs, size, time.perf_counter() - started)
        return True

    def _halve(self, device: str, size: int) -> None:
        self._backend.free_memory(device)
        if self.batch_size == size:  # another device's worker may have halved it already
            self.batch_size = max(1, size // 2)
            self.stats.halvings += 1
            self._log(f"t2i: out of memory on {device} at batch size {size}; retrying at batch size "
                      f"{self.batch_size} (kept for the rest of the run; lower --t2i-batch-size to start there)")

    def _fail(self, chunk: Sequence[_Job], exc: BaseException, size: int) -> None:
        if self._backend.is_out_of_memory(exc):
            message = (f"out of memory at batch size {size}: lower --t2i-size or --t2i-steps, or use a smaller "
                       "model")
        else:
            message = f"the diffusers pipeline failed: {type(exc).__name__}: {str(exc).strip()[:300]}"
        for job in chunk:
            if not job.future.done():
                job.future.set_exception(ProviderError("bad_request", message, attempts=job.call.row.attempts))

    def _answer(self, device: str, chunk: Sequence[_Job], pngs: Sequence[bytes | None], size: int,
                elapsed: float) -> None:
        self.stats.forward_passes += 1
        self.stats.device_s += elapsed
        share = elapsed / len(chunk)
        for job, png in zip(chunk, pngs, strict=True):
            row = job.call.row
            row.server_s += elapsed
            row.meta = {**row.meta, "gpu_s": round(share, 6), "device": device, "batch": len(chunk),
                        "padded_to": size, "seed": job.seed}
            if job.future.done():
                continue
            if png is None:
                job.future.set_exception(ProviderError("refused", "the pipeline's safety checker blanked the image",
                                                       attempts=row.attempts))
                continue
            self.stats.images += 1
            job.future.set_result({"data": png, "ext": "png", "revised_prompt": None, "input_tokens": None,
                                   "output_tokens": None})


def _size(image_size: str | None) -> dict[str, int | None]:
    """``_size("768x512") -> {"width": 768, "height": 512}``; ``None`` leaves the pipeline's default."""
    if image_size is None:
        return {"width": None, "height": None}
    width, height = image_size.split("x")
    return {"width": int(width), "height": int(height)}


def _never(exc: BaseException) -> bool:
    """In-process devices are never "lost": their errors are the pipeline's."""
    return False


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def open_local_transports(config: ProvidersConfig, *, log: Callable[[str], None] | None = None
                                ) -> dict[str, DiffusersTransport]:
    """A loaded :class:`DiffusersTransport` per local role of ``config`` (``{}`` when there is none)."""
    out: dict[str, DiffusersTransport] = {}
    for role in ROLES:
        cfg = config.role(role)
        if is_local_role(cfg):
            out[role] = DiffusersTransport(cfg, log=log)
            await out[role].load()
    return out


def preload(config: ProvidersConfig) -> None:
    """Load every local role's pipelines now, in this thread (the process keeps them: the run's transports
    then find them loaded). ``python -m agent.run`` calls it next to the CLIP scorer, before the run folder
    exists, so a model or device that does not load is one ``ConfigError`` line and nothing is written."""
    for role in ROLES:
        cfg = config.role(role)
        if not is_local_role(cfg):
            continue
        for device in local_pipeline.resolve_devices(cfg.devices):  # LocalPipelineError: a ConfigError
            local_pipeline.load(cfg.model, device)
