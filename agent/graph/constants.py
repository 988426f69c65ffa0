"""The paper-step constants more than one module needs, in a light module (no LangGraph, no torch), so the
dry-run planner, the settings and the graph read the same numbers instead of copying them.

Contract:

- ``EXTEND_BATCH`` and :func:`ask_count`: how many descriptions one extend round asks for
  (agent/graph/extend.py sends them; agent/readout/plan.py bounds the rounds with them).
- ``DEFAULT_THRESHOLDS`` / ``THRESHOLD_RANGES``: μ when none is given, and what each CLIP score can take
  (agent/lifecycle/settings.py validates with them; agent/providers/scorer.py computes the scores).

Default thresholds μ:

- ``cosine``: 0.25. Raw CLIP ViT-B/32 cosines are small: matching image-caption pairs mostly score
  0.25-0.35 and unrelated pairs 0.1-0.2 (CLIPScore, Hessel et al. 2021, rescales by 2.5 for this reason),
  so 0.25 keeps images that plainly show the class and drops off-topic ones. The paper's μ = 0.6 / 0.8
  cannot be raw cosines — nearly every image would be rejected.
- ``softmax``: 0.6, the paper's μ for iNaturalist 2018 (it uses 0.8 for ImageNet-LT and Places-LT): a
  probability among the classes' texts is where those values mean something.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["DEFAULT_THRESHOLDS", "EXTEND_BATCH", "THRESHOLD_RANGES", "ScoreMode", "ask_count"]

ScoreMode = Literal["cosine", "softmax"]

EXTEND_BATCH = 50  # descriptions asked for per round: ~25 tokens each, well inside any model's reply limit
DEFAULT_THRESHOLDS: dict[str, float] = {"cosine": 0.25, "softmax": 0.6}
THRESHOLD_RANGES: dict[str, tuple[float, float]] = {"cosine": (-1.0, 1.0), "softmax": (0.0, 1.0)}


def ask_count(missing: int) -> int:
    """How many descriptions to ask for: ``missing`` + max(2, 20 %), capped at ``EXTEND_BATCH``.

    >>> ask_count(1), ask_count(20), ask_count(300)
    (3, 24, 50)
    """
    return min(EXTEND_BATCH, missing + max(2, missing // 5))
