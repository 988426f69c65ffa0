"""Training losses: soft-target cross-entropy, optionally with logit adjustment (Menon et al., 2020).

Logit adjustment (the "logit-adjusted loss", eq. 10 of Menon et al., "Long-tail learning via logit
adjustment", ICLR 2021 / arXiv 2020): train on ``logits + τ·log(π)`` where π is the class prior of the
*original* training data D_o; predict with the plain logits. On a uniform prior the shift is the same constant
for every class, so softmax — and the loss — equal plain cross-entropy.

All functions are pure; soft targets make them usable in every mode (mixed or not).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from trainer.choices import LOSSES


def log_prior(counts: Sequence[int]) -> torch.Tensor:
    """log π_y with π_y = n_y / Σ n. Classes absent from D_o count as 1 image, so log π stays finite.

    >>> log_prior([3, 1]).exp().tolist()
    [0.75, 0.25]
    """
    n = torch.tensor([max(int(c), 1) for c in counts], dtype=torch.float64)
    return (n / n.sum()).log().float()


def adjust_logits(logits: torch.Tensor, log_pi: torch.Tensor, tau: float) -> torch.Tensor:
    """``logits + τ·log π`` (broadcast over the batch): the training-time logits of the logit-adjusted loss."""
    return logits + tau * log_pi.to(device=logits.device, dtype=logits.dtype)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-Σ_c target_c · log softmax(logits)_c``; equals CE for one-hot targets."""
    return -(target * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


class TrainingLoss:
    """The configured training loss: ``ce`` or ``logit-adjust`` (with prior from D_o counts and τ)."""

    def __init__(self, kind: str, counts: Sequence[int], tau: float = 1.0) -> None:
        if kind not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {kind!r}")
        if not math.isfinite(tau):
            raise ValueError(f"la-tau must be a finite number, got {tau}")
        self.kind = kind
        self.tau = tau
        self.log_pi = log_prior(counts)

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.kind == "logit-adjust":
            logits = adjust_logits(logits, self.log_pi, self.tau)
        return soft_cross_entropy(logits, target)
