"""CLIP score cache: a rerun reads each image's score instead of decoding, preprocessing and encoding it.

Contract:

- ``CachedScorer(scorer, cache)`` wraps a ``ScorerLike`` that has a ``cache_identity`` (``ClipScorer.load``
  sets one: a sha256 over the resolved open_clip model config, the pretrained tag or the weights file's
  path / size / mtime, the device, and the open_clip and torch versions). Scores live in the run's call
  cache (``store/cache.py``, role ``clip_score``; the same connection as the provider calls).
- One entry per image and question. Key = ``cache_key(role="clip_score", model=<identity>, body={"image":
  <sha256 of the image bytes>, "q": <sha256 of the canonical JSON of the question>})``; the question is
  ``{"mode": "cosine", "text": C_y}`` or ``{"mode": "softmax", "texts": [...], "target": i}``. So any change
  of model, weights, device, text(s), target or mode is a miss; the threshold μ is not part of the key
  (scores do not depend on it).
- A hit returns the stored float exactly (JSON keeps a float's repr, which round-trips bit for bit). The
  misses of one call are scored by the wrapped scorer in one call (it batches) and stored; non-finite
  scores are returned but not stored.
- Image identity: a blob path (``<root>/<ab>/<sha256>.<ext>``, content-addressed by ``store/blobs.py``)
  gives its sha256 from its name; any other path is hashed from its bytes.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from store.cache import CallCache, cache_key, canonical_json

__all__ = ["ROLE", "CachedScorer", "image_sha256", "scorer_identity"]

ROLE = "clip_score"
_SHA = re.compile(r"[0-9a-f]{64}")


def scorer_identity(name: str, pretrained: str | None, device: str) -> str:
    """sha256 of everything that fixes a CLIP score besides the image and the text(s)."""
    import open_clip

    weights: Any = pretrained
    if pretrained and Path(pretrained).is_file():
        path = Path(pretrained).resolve()
        stat = path.stat()
        weights = {"file": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    payload = {"model": name, "config": open_clip.get_model_config(name), "pretrained": weights,
               "device": str(device), "open_clip": open_clip.__version__, "torch": torch.__version__}
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def image_sha256(path: Path) -> str:
    """The content hash of an image file: from a blob path's name, else from its bytes."""
    stem = path.name.split(".", 1)[0]
    if _SHA.fullmatch(stem) and path.parent.name == stem[:2]:
        return stem
    return hashlib.sha256(path.read_bytes()).hexdigest()


class CachedScorer:
    """A ``ScorerLike`` whose scores are read from / written to the call cache; see the module docstring."""

    def __init__(self, scorer: Any, cache: CallCache, identity: str | None = None) -> None:
        self._scorer = scorer
        self._cache = cache
        self.identity = identity or scorer.cache_identity
        self.context_length: int = scorer.context_length
        self.hits = 0
        self.misses = 0

    def count_tokens(self, text: str) -> int:
        return int(self._scorer.count_tokens(text))

    async def cosine(self, images: Sequence[Path], text: str) -> list[float]:
        return await self._scored(list(images), {"mode": "cosine", "text": text},
                                  lambda todo: self._scorer.cosine(todo, text))

    async def softmax(self, images: Sequence[Path], texts: Sequence[str], target: int) -> list[float]:
        texts = list(texts)
        return await self._scored(list(images), {"mode": "softmax", "texts": texts, "target": int(target)},
                                  lambda todo: self._scorer.softmax(todo, texts, target))

    async def _scored(self, images: list[Path], question: dict[str, Any],
                      compute: Callable[[list[Path]], Awaitable[list[float]]]) -> list[float]:
        if not images:
            return []
        q = hashlib.sha256(canonical_json(question).encode("utf-8")).hexdigest()
        keys = [cache_key(role=ROLE, model=self.identity, body={"image": image_sha256(p), "q": q}) for p in images]
        found = await self._cache.get_many(keys)
        scores: list[float | None] = []
        for key in keys:
            value = found.get(key)
            score = value.get("score") if value is not None else None
            scores.append(float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else None)
        todo = [i for i, s in enumerate(scores) if s is None]
        self.hits += len(images) - len(todo)
        self.misses += len(todo)
        if todo:
            fresh = [float(s) for s in await compute([images[i] for i in todo])]
            for i, score in zip(todo, fresh, strict=True):
                scores[i] = score
            await self._cache.put_many({keys[i]: {"score": s} for i, s in zip(todo, fresh, strict=True)
                                        if math.isfinite(s)}, role=ROLE, model=self.identity[:16])
        return [float(s) for s in scores if s is not None]

    def __getattr__(self, name: str) -> Any:  # anything else the scorer offers
        return getattr(self._scorer, name)
