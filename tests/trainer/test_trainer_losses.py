"""Soft-target cross-entropy and logit adjustment (Menon et al. 2020)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trainer.losses import TrainingLoss, adjust_logits, log_prior, soft_cross_entropy


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g) * 3
    labels = torch.tensor([0, 1, 2, 3, 3, 1])
    return logits, labels, F.one_hot(labels, 4).float()


def test_soft_cross_entropy_equals_ce_on_one_hot_targets() -> None:
    logits, labels, target = _batch()
    assert torch.allclose(soft_cross_entropy(logits, target), F.cross_entropy(logits, labels))


def test_soft_cross_entropy_on_mixed_targets_is_the_weighted_sum() -> None:
    logits, _, _ = _batch()
    a, b = torch.tensor([0] * 6), torch.tensor([2] * 6)
    target = 0.3 * F.one_hot(a, 4).float() + 0.7 * F.one_hot(b, 4).float()
    expected = 0.3 * F.cross_entropy(logits, a) + 0.7 * F.cross_entropy(logits, b)
    assert torch.allclose(soft_cross_entropy(logits, target), expected)


def test_logit_adjust_equals_ce_on_a_uniform_prior() -> None:
    logits, labels, target = _batch()
    la = TrainingLoss("logit-adjust", counts=[25, 25, 25, 25], tau=1.0)
    ce = TrainingLoss("ce", counts=[25, 25, 25, 25])
    assert torch.allclose(la(logits, target), ce(logits, target))
    assert torch.allclose(la(logits, target), F.cross_entropy(logits, labels))


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_logit_adjust_shifts_logits_by_tau_log_prior(tau: float) -> None:
    logits, labels, target = _batch()
    counts = [100, 30, 5, 1]
    prior = torch.tensor(counts, dtype=torch.float32) / sum(counts)
    shifted = logits + tau * prior.log()
    assert torch.allclose(adjust_logits(logits, log_prior(counts), tau), shifted)
    la = TrainingLoss("logit-adjust", counts=counts, tau=tau)
    assert torch.allclose(la(logits, target), F.cross_entropy(shifted, labels))
    # ... which really differs from plain CE on a long-tailed prior.
    assert not torch.allclose(la(logits, target), F.cross_entropy(logits, labels))


def test_log_prior_is_finite_for_classes_missing_from_the_original_data() -> None:
    lp = log_prior([3, 0, 1])
    assert torch.isfinite(lp).all()
    assert math.isclose(float(lp[0].exp()), 0.6, rel_tol=1e-6)


def test_unknown_loss_is_rejected() -> None:
    with pytest.raises(ValueError, match="ce, logit-adjust"):
        TrainingLoss("focal", counts=[1, 2])
