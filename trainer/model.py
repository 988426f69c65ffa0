"""The classifier: an open_clip visual tower (LoRA-tuned, fully tuned or frozen) and a cosine head.

Contract
- ``--model`` is an open_clip model name or a path to an open_clip model-config JSON (``embed_dim``,
  ``vision_cfg``, ``text_cfg``), registered with ``open_clip.add_model_config`` under the file's stem.
- ``--pretrained`` is ``none`` (random init, seeded, no download attempted), an open_clip tag (downloaded on
  the user's machine), or a path to a weights file. Anything else is a :class:`ModelError` (one line, a
  :class:`store.errors.UsageError`). open_clip's own "No pretrained weights loaded" log line is held back:
  the caller says what the random start means in its context (training, or eval loading trained weights on
  top); any other warning open_clip logs while building is passed to ``log`` once, prefixed ``open_clip:``.
- Tuning (:data:`TUNES`): ``lora`` (the paper: backbone frozen; peft LoRA on the visual tower's ``attn``,
  ``mlp.c_fc``, ``mlp.c_proj`` — not ``attn.out_proj``, which nn.MultiheadAttention bypasses, see
  docs/DESIGN.md §9), ``full`` (every visual parameter trains: a small model from scratch), ``head`` (linear probe).
  The head always trains.
- Head: cosine classifier ``s · cos(f(x), w_c)`` with a learnable scale ``s``; rows ``w_c`` start from the text
  tower's embedding of "a photo of a {name}." (``zeroshot``) or random (``random``). The text tower is dropped
  after that: only the visual tower and the head are kept.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from store.errors import UsageError
from store.hub import CLIP_FIX, clip_hub_files, prepare_hub_files
from trainer.choices import TUNES

LORA_TARGETS = ["attn", "mlp.c_fc", "mlp.c_proj"]
PROMPT = "a photo of a {name}."


class ModelError(UsageError):
    """A model name, config file or weights source that cannot be used; the message is one line."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the classifier (saved in each checkpoint as ``model.json``)."""

    model: str
    pretrained: str = "none"
    tune: str = "lora"
    head: str = "zeroshot"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    image_size: int | None = None
    seed: int = 0


class CosineHead(nn.Module):
    """logits = exp(log_scale) · normalize(f) @ normalize(W)ᵀ, with W (C, D) and a learnable scale."""

    def __init__(self, weight: torch.Tensor, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone().float())
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale), dtype=torch.float32))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        cos = F.normalize(features.float(), dim=-1) @ F.normalize(self.weight, dim=-1).t()  # (B, C)
        return self.log_scale.exp() * cos


class Classifier(nn.Module):
    """visual tower -> cosine head. ``frozen_visual`` runs the tower without autograd (linear probe)."""

    def __init__(self, visual: nn.Module, head: CosineHead, frozen_visual: bool) -> None:
        super().__init__()
        self.visual = visual
        self.head = head
        self.frozen_visual = frozen_visual

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.frozen_visual:
            with torch.no_grad():
                features = self.visual(images)
        else:
            features = self.visual(images)
        return self.head(features)


def build_classifier(cfg: ModelConfig, class_names: list[str],
                     log: Callable[[str], None] | None = None) -> tuple[Classifier, dict[str, Any]]:
    """Create the classifier on CPU; returns it and the preprocessing config (size, mean, std).

    ``log`` receives open_clip's warnings other than its random-init line (default: stderr).
    """
    import open_clip  # heavy (~9 s): imported only when a model is really built

    name = register_model(cfg.model)
    # Every random init here (backbone for `none`, random head, LoRA A) comes from cfg.seed, and the
    # caller's RNG is left untouched: the same config always gives the same starting model.
    with torch.random.fork_rng(devices=[]), _open_clip_logs(log or _stderr):
        torch.manual_seed(cfg.seed)
        clip = _create_clip(open_clip, name, cfg)
        preprocess = dict(clip.visual.preprocess_cfg)
        if cfg.head == "zeroshot":
            weight = _text_embeddings(open_clip, clip, name, class_names)
        else:
            weight = torch.randn(len(class_names), _embed_dim(clip))
        # CLIP's own temperature as the starting scale (14.3 for a random init, 100 for trained weights).
        scale = float(clip.logit_scale.detach().exp().clamp(max=100.0))
        visual = _apply_tuning(clip.visual, cfg)
    return Classifier(visual, CosineHead(weight, scale), frozen_visual=cfg.tune == "head"), preprocess


def register_model(model: str) -> str:
    """Return the open_clip model name for ``model`` (a name, or a config JSON path that gets registered)."""
    import open_clip

    if model.endswith(".json") or os.sep in model:
        path = Path(model)
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelError(f"{path}: model config not found (pass an open_clip name or a config JSON)") from None
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path}: not a readable JSON model config ({exc})") from None
        missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in cfg]
        if missing:
            raise ModelError(f"{path}: an open_clip model config needs {', '.join(missing)}")
        open_clip.add_model_config(path)
        return path.stem
    if model not in open_clip.list_models():
        raise ModelError(f"unknown open_clip model {model!r}: use a name from open_clip.list_models() "
                         f"(e.g. ViT-B-32) or a path to a model-config JSON")
    return model


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train (LoRA / visual / head), by name, detached on CPU."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load :func:`trainable_state` output; names must match exactly (same model config)."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(params) != set(state):
        extra, missing = sorted(set(state) - set(params)), sorted(set(params) - set(state))
        raise ModelError(f"checkpoint does not match the model (missing {missing[:3]}, unexpected {extra[:3]}); "
                         f"use the same --model/--tune/--lora-r as the run that wrote it")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(state[n].to(p.device))


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


RANDOM_INIT = "No pretrained weights loaded"  # open_clip's log line for a random start (factory.py)


@contextmanager
def _open_clip_logs(log: Callable[[str], None]) -> Iterator[None]:
    """Hold back what open_clip logs through the root logger (raw ``WARNING:root:`` lines) while it builds.

    The random-init line is dropped (callers say it in their words); other warnings go to ``log`` once.
    While the root logger has no handler, a holding one stands in: ``logging.warning`` would otherwise
    install a stderr handler for the rest of the process (its ``basicConfig`` fallback), and warnings
    propagated from other loggers (peft's) are held and passed on the same way.
    """
    root = logging.getLogger()
    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        held.append(record)
        return False

    guard = _Holding(held) if not root.handlers else None
    if guard is not None:
        root.addHandler(guard)
    root.addFilter(hold)
    try:
        yield
    finally:
        root.removeFilter(hold)
        if guard is not None:
            root.removeHandler(guard)
        said = {f"{'open_clip' if r.name == 'root' else r.name}: {r.getMessage()}": None
                for r in held if r.levelno >= logging.WARNING and RANDOM_INIT not in r.getMessage()}
        for line in said:
            log(line)


class _Holding(logging.Handler):
    """A handler that keeps WARNING+ records in a list (see :func:`_open_clip_logs`)."""

    def __init__(self, held: list[logging.LogRecord]) -> None:
        super().__init__(logging.WARNING)
        self.held = held

    def emit(self, record: logging.LogRecord) -> None:
        self.held.append(record)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _create_clip(open_clip: Any, name: str, cfg: ModelConfig) -> Any:
    pretrained: str | None = None
    if cfg.pretrained != "none":
        tags = open_clip.list_pretrained_tags_by_model(name)
        if cfg.pretrained not in tags and not Path(cfg.pretrained).is_file():
            known = ", ".join(tags) if tags else "none for this model"
            raise ModelError(f"--pretrained {cfg.pretrained!r}: not a known tag of {name} ({known}) nor a file; "
                             f"pass a tag, a weights file, or 'none'")
        pretrained = cfg.pretrained
    files = clip_hub_files(name, pretrained)
    if files is not None:  # not cached and no network: one line now, not a minute of hub retries
        try:
            prepare_hub_files(f"--model {name} / --pretrained {pretrained}", *files,
                              fix=CLIP_FIX.format(model="--model", pretrained="--pretrained"))
        except UsageError as exc:
            raise ModelError(str(exc)) from None
    try:
        return open_clip.create_model(name, pretrained=pretrained, force_image_size=cfg.image_size, device="cpu")
    except (RuntimeError, OSError, ValueError) as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ModelError(f"cannot create model {name} with pretrained={cfg.pretrained}: {first}") from None


def _embed_dim(clip: Any) -> int:
    if isinstance(getattr(clip.visual, "output_dim", None), int):
        return int(clip.visual.output_dim)
    with torch.no_grad():
        size = clip.visual.preprocess_cfg["size"]
        size = size if isinstance(size, (tuple, list)) else (size, size)
        return int(clip.visual(torch.zeros(1, 3, *size)).shape[-1])


def _text_embeddings(open_clip: Any, clip: Any, name: str, class_names: list[str]) -> torch.Tensor:
    tokenizer = open_clip.get_tokenizer(name)
    with torch.no_grad():
        tokens = tokenizer([PROMPT.format(name=n) for n in class_names])
        return F.normalize(clip.encode_text(tokens).float(), dim=-1)  # (C, D)


def _apply_tuning(visual: nn.Module, cfg: ModelConfig) -> nn.Module:
    if cfg.tune not in TUNES:
        raise ModelError(f"--tune must be one of {', '.join(TUNES)}, got {cfg.tune!r}")
    for p in visual.parameters():
        p.requires_grad_(cfg.tune == "full")
    if cfg.tune != "lora":
        return visual
    import peft

    lora = peft.LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                           target_modules=LORA_TARGETS)
    return peft.get_peft_model(visual, lora)  # freezes the base, leaves LoRA A/B trainable
