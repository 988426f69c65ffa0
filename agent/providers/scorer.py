"""The CLIP scorer of the iterative evaluation (paper §3.1, step 6): one open_clip model per run.

Contract:

- ``ClipScorer.load(model, pretrained)`` builds the model once; every class of the run shares it.
  ``model`` is an open_clip model name (``ViT-B-32``) or the path of an open_clip model-config JSON
  (registered with ``open_clip.add_model_config``; tests use a ~1 M-parameter config). ``pretrained`` is a
  tag (downloaded on the user's machine), a local weights file, or ``None`` (random weights: tests, demos;
  initialised from a fixed seed so that every process scores alike and reruns stay cache hits).
  A bad name or file raises ``ScorerError`` with one line.
- ``await cosine(images, text)`` -> raw cosine of L2-normalised image and text embeddings, one per image
  (the official code's S). ``await softmax(images, texts, target)`` -> the probability of ``texts[target]``
  among all ``texts``, at the model's own temperature (``logit_scale``), one per image.
- Images are scored in batches of ``batch_size``; the model runs in a worker thread
  (``asyncio.to_thread``) behind a lock, so the event loop keeps serving provider calls and two classes
  never drive the model at once. Text embeddings are cached by text (softmax re-reads every class's text).
- ``count_tokens(text)`` counts with the model's own tokenizer (start and end tokens included), so
  callers can tell whether ``context_length`` will truncate a text.
- ``cache_identity``: set by ``load`` (sha256 of model config, weights, device, versions); the run wraps a
  scorer that has one in ``agent.providers.score_cache.CachedScorer``, so a rerun reads its scores from the call cache.

Default thresholds μ: ``DEFAULT_THRESHOLDS``, defined (and argued for) in agent/graph/constants.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from agent.graph.constants import DEFAULT_THRESHOLDS
from store.errors import UsageError
from store.hub import CLIP_FIX, clip_hub_files, prepare_hub_files

__all__ = ["DEFAULT_THRESHOLDS", "ClipScorer", "ScorerError", "cosine_scores", "count_tokens", "softmax_scores"]



class ScorerError(UsageError):
    """The CLIP model cannot be built (unknown name, unreadable config or weights); one line."""


def cosine_scores(image_features: torch.Tensor, text_feature: torch.Tensor) -> list[float]:
    """Raw cosine of each image row against one text vector (inputs need not be normalised).

    >>> cosine_scores(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([3.0, 0.0]))
    [1.0, 0.0]
    """
    img = torch.nn.functional.normalize(image_features.float(), dim=-1)  # (N, D)
    txt = torch.nn.functional.normalize(text_feature.float(), dim=-1)  # (D,)
    return [float(x) for x in img @ txt]


def softmax_scores(
    image_features: torch.Tensor, text_features: torch.Tensor, target: int, logit_scale: float
) -> list[float]:
    """P(target | image) = softmax over texts of ``logit_scale`` * cosine, one per image row.

    >>> softmax_scores(torch.eye(2), torch.eye(2), 0, logit_scale=0.0)
    [0.5, 0.5]
    """
    img = torch.nn.functional.normalize(image_features.float(), dim=-1)  # (N, D)
    txt = torch.nn.functional.normalize(text_features.float(), dim=-1)  # (T, D)
    probs = (logit_scale * img @ txt.T).softmax(dim=-1)  # (N, T)
    return [float(x) for x in probs[:, target]]


class ClipScorer:
    """An open_clip model, its image transform and tokenizer; see the module docstring."""

    def __init__(self, model: Any, preprocess: Callable[[Any], torch.Tensor], tokenizer: Any, *,
                 context_length: int, batch_size: int = 64, device: str = "cpu") -> None:
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.batch_size = batch_size
        self.device = device
        self.logit_scale = float(model.logit_scale.exp().item()) if hasattr(model, "logit_scale") else 100.0
        self._lock = threading.Lock()  # a thread lock: correct whichever event loop or thread calls in
        self._text_cache: dict[str, torch.Tensor] = {}
        # What fixes a score besides image and text (agent/providers/score_cache.py); set by ``load``. None: the
        # model's origin is unknown, so its scores are never cached.
        self.cache_identity: str | None = None

    @classmethod
    def load(cls, model: str, pretrained: str | None, *, batch_size: int = 64, device: str | None = None) -> ClipScorer:
        import open_clip  # heavy import (~5 s): only when a run really scores

        name = _register_config(model)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        files = clip_hub_files(name, pretrained)
        if files is not None:  # not cached and no network: one line now, not a minute of hub retries
            prepare_hub_files(f"--clip-model {model} / --clip-pretrained {pretrained}", *files, fix=CLIP_FIX.format(
                model="--clip-model", pretrained="--clip-pretrained"))
        try:
            # Random weights (pretrained=None: tests, demos) must be the same in every process, or a rerun
            # would score differently, refine differently and miss the cache. Seed a forked RNG only.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                clip, _, preprocess = open_clip.create_model_and_transforms(
                    name, pretrained=pretrained, device=device)
            tokenizer = open_clip.get_tokenizer(name)
        except (RuntimeError, FileNotFoundError, ValueError, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ScorerError(
                f"--clip-model {model} / --clip-pretrained {pretrained or 'none'}: cannot build the model "
                f"({first}); pass an open_clip model name or config JSON and a tag, weights file or 'none'"
            ) from None
        context = int(getattr(tokenizer, "context_length", None) or getattr(clip, "context_length", None) or 77)
        scorer = cls(clip, preprocess, tokenizer, context_length=context, batch_size=batch_size, device=device)
        from agent.providers.score_cache import scorer_identity

        scorer.cache_identity = scorer_identity(name, pretrained, device)
        return scorer

    def count_tokens(self, text: str) -> int:
        """Tokens the text tower would read before truncation, start/end tokens included."""
        return count_tokens(self.tokenizer, text)

    async def cosine(self, images: Sequence[Path], text: str) -> list[float]:
        if not images:
            return []
        return await asyncio.to_thread(self._locked, self._cosine_sync, list(images), text)

    async def softmax(self, images: Sequence[Path], texts: Sequence[str], target: int) -> list[float]:
        if not images:
            return []
        return await asyncio.to_thread(self._locked, self._softmax_sync, list(images), list(texts), target)

    # ------------------------------------------------------------------------------ worker-thread side
    def _locked(self, fn: Callable[..., list[float]], *args: Any) -> list[float]:
        with self._lock:
            return fn(*args)

    def _cosine_sync(self, images: list[Path], text: str) -> list[float]:
        return cosine_scores(self._image_features(images), self._text_features([text])[0])

    def _softmax_sync(self, images: list[Path], texts: list[str], target: int) -> list[float]:
        return softmax_scores(self._image_features(images), self._text_features(texts), target, self.logit_scale)

    @torch.inference_mode()
    def _image_features(self, paths: list[Path]) -> torch.Tensor:
        from PIL import Image

        out = []
        for start in range(0, len(paths), self.batch_size):
            batch = []
            for path in paths[start:start + self.batch_size]:
                with Image.open(path) as img:
                    batch.append(self.preprocess(img.convert("RGB")))
            pixels = torch.stack(batch).to(self.device)  # (B, 3, H, W)
            out.append(self.model.encode_image(pixels).float().cpu())  # (B, D)
        return torch.cat(out)

    @torch.inference_mode()
    def _text_features(self, texts: list[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start:start + self.batch_size]
            tokens = self.tokenizer(chunk).to(self.device)  # (B, context_length), truncated by the tokenizer
            for text, feature in zip(chunk, self.model.encode_text(tokens).float().cpu(), strict=True):
                self._text_cache[text] = feature
        return torch.stack([self._text_cache[t] for t in texts])  # (T, D)


def _register_config(model: str) -> str:
    """A config JSON path is registered with open_clip under its file stem; a name passes through."""
    path = Path(model)
    if model.endswith(".json") or path.is_file():
        if not path.is_file():
            raise ScorerError(f"--clip-model {model}: config file not found; pass a model name or a JSON path")
        import open_clip

        open_clip.add_model_config(path)
        return path.stem
    return model


def count_tokens(tokenizer: Any, text: str) -> int:
    """Tokens an open_clip ``tokenizer``'s text tower would read before truncation, start/end tokens included
    (the in-process scorer and the Ray one share the tokenizer, so they share this count)."""
    if hasattr(tokenizer, "encode"):
        return len(tokenizer.encode(text)) + 2
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is not None:
        return len(inner(text)["input_ids"])
    return int((tokenizer([text]) != 0).sum())
