"""Training losses: soft-target cross-entropy, optionally with logit adjustment (Menon et al., 2020).

Logit adjustment (the "logit-adjusted loss", eq. 10 of Menon et al., "Long-tail learning via logit
adjustment", ICLR 2021 / arXiv 2020): train on ``logits + τ·log(π)`` where π is the label prior *of the
training distribution*; predict with the plain logits. On a uniform prior the shift is the same constant for
every class, so softmax — and the loss — equal plain cross-entropy.

Which π? Menon et al. train on instances drawn from the long-tailed set, so π is its class frequency. Here
the sampler decides what the model sees (:mod:`trainer.balancemix`), so the prior the loss should remove is
the one the sampler *produces* (``--la-prior sampler``, the default), not D_o's counts (``--la-prior
original``). :func:`sampler_prior` derives it per mode.

Derivation. Let D_o have n_c images of class c (N_o in all, C_o classes with n_c > 0) and D_g have g_c
(N_g, C_g). A training sample's target is ỹ = λ·e(y_i) + (1−λ)·e(y_j) (unmixed modes: ỹ = e(y_i), i.e.
λ = 1). The label prior the loss sees is the expected target, π_c = E[ỹ_c]. λ is drawn independently of i
and j (``epoch_plan``), so

    π_c = E[λ]·P(y_i = c) + E[1−λ]·P(y_j = c),   and E[λ] = 1/2 for λ ~ Beta(α, α), whatever α.

- ``plain``: instance sampling over D_o ∪ D_g (shuffled passes: every image once per pass, so the marginal
  of any draw is uniform over images): π_c = (n_c + g_c) / (N_o + N_g). Without D_g this is D_o's prior,
  exactly Menon et al.'s.
- ``balanced``: a class uniformly among those present in D_o ∪ D_g, then an image: π_c = 1 / C_{o∪g} for a
  present class (uniform, so logit adjustment is a no-op).
- ``mixup``: i and j both instance-sampled from D_o ∪ D_g: π_c = ½ p_c + ½ p_c = p_c, the plain prior.
- ``balancemix`` (LTGC): x_i class-balanced from D_o, P(y_i = c) = [n_c > 0] / C_o; x_j from D_g, uniformly
  over images P(y_j = c) = g_c / N_g (``--gen-sampling uniform``) or class-balanced [g_c > 0] / C_g:

      π_c = ½·[n_c > 0] / C_o + ½·g_c / N_g.

  With D_g filling every class up to K (g_c = max(0, K − n_c)), g is largest where D_o is smallest, so
  BalanceMix's prior is *tail-heavy*: on the benchmark's Fashion-MNIST-LT split (n = 1000 … 10, K = 300,
  N_g = 1,580) π runs from 0.050 for the three head classes (which get no D_g) to 0.142 for the rarest;
  D_o's own prior runs the other way, from 0.40 to 0.004. Logit adjustment with BalanceMix's π therefore
  moves predictions back *toward* head classes — the opposite of adjusting by D_o's counts.

The prior is the marginal of the *targets*; mixed inputs are not images of one class, so this is the prior
in the sense of the expected soft label, which is what soft-target cross-entropy is trained against.
tests/trainer/test_trainer_losses.py checks it against an empirical count from the real sampler.

All functions are pure; soft targets make them usable in every mode (mixed or not).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from trainer.choices import LA_PRIORS, LOSSES, MODES

__all__ = ["LA_PRIORS", "TrainingLoss", "adjust_logits", "log_prior", "sampler_prior", "soft_cross_entropy"]


def sampler_prior(mode: str, counts_o: Sequence[int], counts_g: Sequence[int],
                  gen_sampling: str = "uniform") -> list[float]:
    """π_c = E[ỹ_c], the label prior mode ``mode``'s sampler produces (see the module docstring).

    >>> [round(p, 4) for p in sampler_prior("balancemix", [1000, 100, 10], [0, 200, 290])]
    [0.1667, 0.3707, 0.4626]
    >>> [round(p, 4) for p in sampler_prior("plain", [1000, 100, 10], [0, 200, 290])]
    [0.625, 0.1875, 0.1875]
    >>> sampler_prior("balanced", [5, 0, 1], [0, 0, 3])
    [0.5, 0.0, 0.5]
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if len(counts_o) != len(counts_g):
        raise ValueError(f"counts_o has {len(counts_o)} classes but counts_g has {len(counts_g)}")
    both = [int(a) + int(b) for a, b in zip(counts_o, counts_g, strict=True)]
    if mode in ("plain", "mixup"):
        return _normalized(both)
    if mode == "balanced":
        return _normalized([1 if n > 0 else 0 for n in both])
    x_i = _normalized([1 if n > 0 else 0 for n in counts_o])
    if gen_sampling == "balanced":
        x_j = _normalized([1 if n > 0 else 0 for n in counts_g])
    else:
        x_j = _normalized([int(n) for n in counts_g])
    return [0.5 * a + 0.5 * b for a, b in zip(x_i, x_j, strict=True)]


def log_prior(counts: Sequence[float]) -> torch.Tensor:
    """log π_y with π_y = n_y / Σ n. Classes with fewer than one image count as 1, so log π stays finite.

    ``counts`` may be expected counts (a prior times a pool size), as :class:`TrainingLoss` receives them.

    >>> log_prior([3, 1]).exp().tolist()
    [0.75, 0.25]
    """
    n = torch.tensor([max(float(c), 1.0) for c in counts], dtype=torch.float64)
    return (n / n.sum()).log().float()


def adjust_logits(logits: torch.Tensor, log_pi: torch.Tensor, tau: float) -> torch.Tensor:
    """``logits + τ·log π`` (broadcast over the batch): the training-time logits of the logit-adjusted loss."""
    return logits + tau * log_pi.to(device=logits.device, dtype=logits.dtype)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-Σ_c target_c · log softmax(logits)_c``; equals CE for one-hot targets."""
    return -(target * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


class TrainingLoss:
    """The configured training loss: ``ce`` or ``logit-adjust`` with a class prior and τ.

    ``counts``: per-class counts, or expected counts (a prior scaled by a pool size) — only their ratios
    matter, except that entries below 1 are raised to 1 (:func:`log_prior`).
    """

    def __init__(self, kind: str, counts: Sequence[float], tau: float = 1.0) -> None:
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


def _normalized(weights: Sequence[int]) -> list[float]:
    total = sum(weights)
    if total <= 0:
        raise ValueError("cannot draw from an empty pool: every class count is 0")
    return [w / total for w in weights]
