"""The GPU-bound local work on a Ray cluster (``--ray local|auto|ADDRESS``): one actor per GPU.

Contract:

- Importing this module is free: ``ray`` is imported inside the functions, and only ``python -m agent.run
  --ray ...`` imports this module, so a run without the flag never imports Ray. The ``cluster`` extra
  installs it (``pip install -e ".[cluster]"``); without it ``--ray`` is one :class:`ConfigError` line.
- :func:`connect` joins the cluster: ``local`` starts a one-machine Ray instance in this process, ``auto``
  joins the cluster started on this machine by ``ray start --head``, anything else is its address
  (``HOST:6379`` or ``ray://HOST:10001``). :func:`cluster_info` counts its live nodes, CPUs and GPUs.
- :func:`actor_kinds` says which actors the pool starts: one ``cuda`` actor per GPU of the cluster, or one
  per ``--t2i-devices`` entry (``cuda:N`` -> a GPU actor anywhere, ``cpu`` or ``cpu:N`` -> a CPU-only actor;
  ``cpu:0,cpu:1`` is two of them). Each actor (:class:`GpuWorker`) holds only loaded models: the diffusers pipeline (when
  ``t2i`` is local) and the CLIP scorer. The LangGraph driver, its cache, checkpoints, traces and budget
  stay in the driver process; actors receive prompts, seeds and image bytes and send PNGs and scores back.
- :class:`RayPool` owns the actors. :meth:`RayPool.render_backend` plugs into
  :class:`agent.providers.local_t2i.DiffusersTransport` as its ``backend`` (the same queue, batching,
  padding, admission, OOM halving: one worker per actor), so an image rendered on an actor is byte-identical
  to one rendered in-process on the same device type and dtype (same seeds, same padded batch shape). A
  lost actor or node (:meth:`RayRenderBackend.is_lost`) makes the transport hand that batch to the other
  actors; nothing else is rendered again. :class:`agent.providers.cluster_scorer.RayScorer` sends CLIP
  scoring to the least-busy live actor the same way.
- :meth:`RayPool.close` kills the actors and leaves the cluster (a ``local`` instance ends with it).
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.providers import local_pipeline
from agent.providers.config import ConfigError, ProvidersConfig, is_local_role
from agent.providers.local_pipeline import RenderOptions

__all__ = ["ClusterInfo", "GpuWorker", "RayPool", "RayRenderBackend", "actor_kinds", "cluster_info", "connect",
           "ray_missing"]

_INSTALL = 'pip install -e ".[cluster]" (Ray)'


def ray_missing() -> bool:
    """True when the ``cluster`` extra is not installed (no import)."""
    return importlib.util.find_spec("ray") is None


@dataclass(frozen=True)
class ClusterInfo:
    """What a cluster offers: ``nodes`` is ``[(address, cpus, gpus), ...]`` for the live nodes."""

    address: str
    nodes: tuple[tuple[str, float, float], ...]

    @property
    def gpus(self) -> int:
        return int(sum(gpus for _, _, gpus in self.nodes))

    def line(self) -> str:
        """``"2 node(s), 16 CPU(s), 3 GPU(s) (10.0.0.1: 2, 10.0.0.2: 1)"``"""
        cpus = int(sum(cpus for _, cpus, _ in self.nodes))
        per = ", ".join(f"{addr}: {int(g)}" for addr, _, g in self.nodes if g)
        return f"{len(self.nodes)} node(s), {cpus} CPU(s), {self.gpus} GPU(s)" + (f" ({per})" if per else "")


def connect(address: str, *, num_cpus: int | None = None) -> None:
    """Join (or, for ``local``, start) the Ray cluster once per process; :class:`ConfigError` when that fails."""
    if ray_missing():
        raise ConfigError(f"--ray {address}: Ray is not installed; install it with: {_INSTALL}")
    import ray

    if ray.is_initialized():
        return
    quiet: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    try:
        if address == "local":
            ray.init(num_cpus=num_cpus, **quiet)
        else:
            ray.init(address=address, **quiet)
    except Exception as exc:  # noqa: BLE001 - whatever Ray raises, the user's fix is the address
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--ray {address}: cannot join the Ray cluster ({type(exc).__name__}: {detail}); start "
                          "one with `ray start --head` and give its address (HOST:6379, ray://HOST:10001 or "
                          "auto), or use --ray local for this machine alone") from None


def cluster_info() -> ClusterInfo:
    """The live nodes of the joined cluster, their CPUs and GPUs."""
    import ray

    nodes = tuple((str(n.get("NodeManagerAddress", "?")), float(n["Resources"].get("CPU", 0)),
                   float(n["Resources"].get("GPU", 0))) for n in ray.nodes() if n.get("Alive"))
    return ClusterInfo(ray.get_runtime_context().gcs_address, nodes)


def actor_kinds(devices: str | None, gpus: int) -> list[str]:
    """The device kind of each actor: one ``cuda`` per cluster GPU, or one per ``--t2i-devices`` entry.

    >>> actor_kinds(None, 2), actor_kinds("cpu:0,cpu:1", 0), actor_kinds("cuda:0,cuda:1,cpu", 2)
    (['cuda', 'cuda'], ['cpu', 'cpu'], ['cuda', 'cuda', 'cpu'])
    """
    if devices is None:
        if gpus < 1:
            raise ConfigError("--ray: the cluster has no GPU; add GPU nodes, or give --t2i-devices cpu:0[,cpu:1...] "
                              "to run CPU actors (slow: for tests)")
        return ["cuda"] * gpus
    kinds = []
    for name in devices.split(","):
        kind = name.split(":")[0]
        if kind not in ("cuda", "cpu"):
            raise ConfigError(f"--t2i-devices {devices}: {name} cannot be a Ray actor's device; use cuda or cpu "
                              "entries (each is one actor)")
        kinds.append(kind)
    wanted = kinds.count("cuda")
    if wanted > gpus:
        raise ConfigError(f"--t2i-devices {devices}: {wanted} GPU actor(s) asked for, the cluster has {gpus} "
                          "GPU(s); list at most that many cuda entries")
    return kinds


class GpuWorker:
    """One actor: the models on one device. Ray runs its methods one at a time (no concurrency inside)."""

    def __init__(self, kind: str, cpu_threads: int | None = None) -> None:
        self.device = "cuda:0" if kind == "cuda" else "cpu"  # Ray makes the actor's GPU its cuda:0
        self.scorer: Any = None
        if cpu_threads:  # a CPU actor sums in the driver's thread layout: same rounding, same PNG bytes
            import torch

            torch.set_num_threads(cpu_threads)

    def where(self) -> dict[str, str]:
        import ray

        name = self.device
        if self.device.startswith("cuda"):
            import torch

            name = f"{self.device} {torch.cuda.get_device_name(0)}"
        return {"node": ray.util.get_node_ip_address(), "device": self.device, "name": name}

    def load_pipeline(self, model: str) -> str:
        local_pipeline.load(model, self.device)
        return local_pipeline.dtype_name(self.device)

    def render(self, model: str, prompts: Sequence[str], seeds: Sequence[int], options: RenderOptions,
               pad_to: int) -> list[bytes | None]:
        pipe = local_pipeline.load(model, self.device)
        try:
            return local_pipeline.render(pipe, prompts, seeds, options, pad_to)
        except Exception as exc:
            if local_pipeline.is_out_of_memory(exc):
                local_pipeline.free_memory(self.device)
            raise

    def load_scorer(self, clip_model: str, config_json: str | None, pretrained: str | None) -> dict[str, Any]:
        """The CLIP scorer on this actor's device; a config JSON travels as text (nodes share no disk)."""
        from agent.providers.scorer import ClipScorer

        model = clip_model
        if config_json is not None:
            folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"ltgc-clip-{os.getpid()}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / Path(clip_model).name
            path.write_text(config_json, encoding="utf-8")
            model = str(path)
        self.scorer = ClipScorer.load(model, pretrained, device=self.device.split(":")[0])
        return {"identity": self.scorer.cache_identity}

    def cosine(self, images: Sequence[bytes], text: str) -> list[float]:
        import io

        return list(self.scorer._cosine_sync([io.BytesIO(b) for b in images], text))

    def softmax(self, images: Sequence[bytes], texts: Sequence[str], target: int) -> list[float]:
        import io

        return list(self.scorer._softmax_sync([io.BytesIO(b) for b in images], list(texts), target))


@dataclass
class _Actor:
    label: str  # "ray0:cuda@10.0.0.5": what trace rows and log lines name
    handle: Any
    busy: int = 0
    lost: bool = False


@dataclass
class RayPool:
    """The actors of one run (see the module docstring)."""

    address: str
    actors: list[_Actor] = field(default_factory=list)
    started_here: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def start(cls, address: str, config: ProvidersConfig, *, num_cpus: int | None = None) -> RayPool:
        """Join the cluster and start one actor per device (:func:`actor_kinds`); no model loaded yet."""
        import ray

        fresh = not ray.is_initialized()
        connect(address, num_cpus=num_cpus)
        info = cluster_info()
        devices = config.t2i.devices if is_local_role(config.t2i) else None
        kinds = actor_kinds(devices, info.gpus)
        import torch

        # Ray starts an actor with one torch thread; a CPU forward pass's float sums depend on the thread
        # count, and so (through rounding) a few pixels: CPU actors use this process's count.
        threads = torch.get_num_threads()
        remote: Any = ray.remote(GpuWorker)
        handles: list[Any] = [remote.options(num_gpus=1 if kind == "cuda" else 0, num_cpus=0, max_restarts=0,
                                  max_task_retries=0).remote(kind, threads if kind == "cpu" else None)
                   for kind in kinds]
        places = ray.get([h.where.remote() for h in handles])
        actors = [_Actor(f"ray{i}:{kind}@{place['node']}", h)
                  for i, (kind, h, place) in enumerate(zip(kinds, handles, places, strict=True))]
        return cls(address, actors, started_here=fresh and address == "local")

    def live(self) -> list[_Actor]:
        return [a for a in self.actors if not a.lost]

    def by_label(self, label: str) -> _Actor:
        return next(a for a in self.actors if a.label == label)

    def take(self) -> _Actor:
        """The least-busy live actor, counted busy until :meth:`give_back`; RuntimeError when none is left."""
        with self._lock:
            live = self.live()
            if not live:
                raise RuntimeError("every Ray actor of the run was lost; check the cluster (ray status), then "
                                   "continue with --resume")
            actor = min(live, key=lambda a: a.busy)
            actor.busy += 1
            return actor

    def hold(self, actor: _Actor) -> None:
        """Count ``actor`` busy (a render worker's batch on it), until :meth:`give_back`."""
        with self._lock:
            actor.busy += 1

    def give_back(self, actor: _Actor) -> None:
        with self._lock:
            actor.busy -= 1

    def load_scorers(self, clip_model: str, pretrained: str | None) -> str | None:
        """Load CLIP on every actor; the identity of its scores (same as in-process on that device type)."""
        import ray

        config_json = Path(clip_model).read_text(encoding="utf-8") if clip_model.endswith(".json") else None
        answers = ray.get([a.handle.load_scorer.remote(clip_model, config_json, pretrained) for a in self.actors])
        identities = {answer["identity"] for answer in answers}
        return identities.pop() if len(identities) == 1 else None  # mixed device types: scores not cached

    def render_backend(self) -> RayRenderBackend:
        return RayRenderBackend(self)

    def close(self) -> None:
        import ray

        for actor in self.actors:
            try:
                ray.kill(actor.handle)
            except Exception:  # noqa: BLE001, S110 - already gone (a lost node): nothing to stop
                pass
        if self.started_here:
            ray.shutdown()


def is_lost(exc: BaseException) -> bool:
    """The actor (or its node) died: its work goes to another actor."""
    import ray.exceptions as rex

    return isinstance(exc, (rex.RayActorError, rex.NodeDiedError, rex.WorkerCrashedError, rex.ObjectLostError))


def unwrap(exc: BaseException) -> BaseException:
    """An error raised inside an actor, as its own exception (not Ray's wrapper with the remote traceback)."""
    import ray.exceptions as rex

    if isinstance(exc, rex.RayTaskError) and isinstance(exc.cause, BaseException):
        return exc.cause
    return exc


class RayRenderBackend:
    """The ``backend`` of a :class:`agent.providers.local_t2i.DiffusersTransport` that renders on the pool's
    actors: a "device" is an actor's label, a "pipe" is ``(actor, model)``."""

    def __init__(self, pool: RayPool) -> None:
        self.pool = pool

    def resolve_devices(self, spec: str | None) -> list[str]:
        return [a.label for a in self.pool.live()]

    def load(self, model: str, device: str) -> tuple[_Actor, str]:
        import ray

        actor = self.pool.by_label(device)
        try:
            ray.get(actor.handle.load_pipeline.remote(model))
        except Exception as exc:  # noqa: BLE001 - one line: the model setting's, as in-process
            raise local_pipeline.LocalPipelineError(str(unwrap(exc)).strip().splitlines()[0][:400]) from None
        return actor, model

    def render(self, pipe: tuple[_Actor, str], prompts: Sequence[str], seeds: Sequence[int], options: RenderOptions,
               pad_to: int) -> list[bytes | None]:
        import ray

        actor, model = pipe
        self.pool.hold(actor)  # scoring calls go to a less busy actor meanwhile
        try:
            return list(ray.get(actor.handle.render.remote(model, list(prompts), list(seeds), options, pad_to)))
        except Exception as exc:
            if is_lost(exc):
                actor.lost = True
                raise
            raise unwrap(exc) from None
        finally:
            self.pool.give_back(actor)

    def is_lost(self, exc: BaseException) -> bool:
        return is_lost(exc)

    @staticmethod
    def is_out_of_memory(exc: BaseException) -> bool:
        return "out of memory" in str(exc).lower()

    @staticmethod
    def free_memory(device: str) -> None:
        """Done inside the actor, right after the error (:meth:`GpuWorker.render`)."""
