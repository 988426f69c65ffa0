"""``--ray``: the run's side of the Ray pool (agent/providers/cluster.py). Imported only when the flag is given.

Contract:

- :func:`open_cluster` joins the cluster, starts one actor per GPU (or ``--t2i-devices`` entry), loads the
  CLIP scorer on every actor and, when ``t2i`` is local (``--t2i-provider diffusers``), the pipeline; it
  returns ``(pool, scorer, local transports)`` for ``agent.lifecycle.driver.execute``. A cluster that cannot
  be joined, has no GPU, or cannot load a model is one :class:`ConfigError` line (nothing written yet).
- :func:`cluster_plan` is the ``--dry-run`` addition: the cluster's GPUs, the actors a run would start, and
  the render and scoring time they imply (the work split over the actors); no actor is started.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.providers.config import ConfigError, ProvidersConfig, is_local_role

__all__ = ["cluster_plan", "open_cluster"]


def open_cluster(settings: Any, config: ProvidersConfig, log: Callable[[str], None]) -> tuple[Any, Any, dict[str, Any]]:
    """``(pool, scorer, {"t2i": transport} or {})``; see the module docstring."""
    from agent.providers.cluster import RayPool
    from agent.providers.cluster_scorer import RayScorer
    from agent.providers.local_pipeline import LocalPipelineError
    from agent.providers.local_t2i import DiffusersTransport
    from agent.providers.scorer import ScorerError

    pool = RayPool.start(settings.ray, config)
    try:
        log(f"ray: {len(pool.actors)} actor(s): {', '.join(a.label for a in pool.actors)}")
        try:
            scorer = RayScorer.load(pool, settings.clip_model, settings.pretrained_arg())
        except Exception as exc:  # noqa: BLE001 - the CLIP settings' error, as in-process: one line
            from agent.providers.cluster import unwrap

            cause = unwrap(exc)
            if isinstance(cause, ScorerError):
                raise cause from None
            raise ConfigError(f"--ray: the CLIP model does not load on the actors ({type(cause).__name__}: "
                              f"{str(cause).strip()[:300]})") from None
        local: dict[str, Any] = {}
        if is_local_role(config.t2i):
            backend = pool.render_backend()
            try:
                for actor in pool.actors:
                    backend.load(config.t2i.model, actor.label)
            except LocalPipelineError as exc:
                raise ConfigError(str(exc)) from None
            local["t2i"] = DiffusersTransport(config.t2i, log=log, backend=backend)
    except BaseException:
        pool.close()
        raise
    return pool, scorer, local


def cluster_plan(settings: Any, config: ProvidersConfig, inputs: Any) -> str:
    """Lines for ``--dry-run --ray``: the cluster's GPUs and what they imply (see the module docstring)."""
    import ray

    from agent.providers.cluster import actor_kinds, cluster_info, connect

    fresh = not ray.is_initialized()
    connect(settings.ray)
    try:
        info = cluster_info()
    finally:
        if fresh:
            ray.shutdown()
    devices = config.t2i.devices if is_local_role(config.t2i) else None
    kinds = actor_kinds(devices, info.gpus)
    images = sum(max(0, settings.target_per_class - len(c.images)) for c in inputs.classes)
    share = -(-images // len(kinds))  # ceiling: the busiest actor's share
    work = "renders and scores" if is_local_role(config.t2i) else "scores"
    return (f"ray ({settings.ray}): {info.line()}; a run starts {len(kinds)} actor(s) "
            f"({kinds.count('cuda')} GPU, {kinds.count('cpu')} CPU). Each {work} about {share} of the "
            f"{images} images (N_y, before refinement): the time is one device's time for {share} images, "
            f"1/{len(kinds)} of a single device's.")
