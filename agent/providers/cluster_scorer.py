"""CLIP scoring on the Ray pool's actors (agent/providers/cluster.py): the scorer interface of
agent/providers/scorer.py, with the model on the actors.

Contract:

- :meth:`RayScorer.load` loads the CLIP model on every actor (a config JSON travels as text) and the
  tokenizer here (``count_tokens`` is answered in this process, without a round trip).
- ``await cosine(images, text)`` / ``await softmax(images, texts, target)``: the image files are read here
  (the actors share no disk with the driver) and sent as bytes to the least-busy live actor; the answer is
  awaited without blocking the event loop (Ray's ObjectRefs are awaitable). The numbers of
  :class:`agent.providers.scorer.ClipScorer` on the same device type (the actor runs that very code), up to
  float32 rounding: an actor runs its own number of torch threads (measured: differences below 1e-7).
- An actor (or its node) lost during a call: the call goes to another live actor; when none is left, a
  ``RuntimeError`` says so (the run stops that class; ``--resume`` continues once the cluster is back).
- ``cache_identity`` is the actors' (one device type) so scores are cached and shared with in-process runs
  on that device type; actors of mixed device types leave it ``None`` (scores not cached).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.providers.cluster import RayPool, is_lost, unwrap

__all__ = ["RayScorer"]


class RayScorer:
    """A ``ScorerLike`` whose model runs on the pool's actors (see the module docstring)."""

    def __init__(self, pool: RayPool, tokenizer: Any, context_length: int, identity: str | None) -> None:
        self.pool = pool
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.cache_identity = identity

    @classmethod
    def load(cls, pool: RayPool, clip_model: str, pretrained: str | None) -> RayScorer:
        import open_clip

        from agent.providers.scorer import _register_config

        identity = pool.load_scorers(clip_model, pretrained)
        name = _register_config(clip_model)
        tokenizer = open_clip.get_tokenizer(name)
        context = int(getattr(tokenizer, "context_length", None) or 77)
        return cls(pool, tokenizer, context, identity)

    def count_tokens(self, text: str) -> int:
        """Same count as :meth:`agent.providers.scorer.ClipScorer.count_tokens` (the same tokenizer)."""
        from agent.providers.scorer import count_tokens  # torch: loaded by then (the tokenizer came from it)

        return count_tokens(self.tokenizer, text)

    async def cosine(self, images: Sequence[Path], text: str) -> list[float]:
        if not images:
            return []
        data = await asyncio.to_thread(_read_all, images)
        return await self._call("cosine", data, text)

    async def softmax(self, images: Sequence[Path], texts: Sequence[str], target: int) -> list[float]:
        if not images:
            return []
        data = await asyncio.to_thread(_read_all, images)
        return await self._call("softmax", data, list(texts), target)

    async def _call(self, method: str, *args: Any) -> list[float]:
        while True:
            actor = self.pool.take()
            try:
                return list(await getattr(actor.handle, method).remote(*args))
            except Exception as exc:
                if not is_lost(exc):
                    raise unwrap(exc) from None
                actor.lost = True  # next round: another actor, or the RuntimeError of take()
            finally:
                self.pool.give_back(actor)


def _read_all(paths: Sequence[Path]) -> list[bytes]:
    return [Path(p).read_bytes() for p in paths]
