"""Soft-target cross-entropy, logit adjustment (Menon et al. 2020) and the label prior of each sampler."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from trainer.balancemix import PairSampler, SamplingConfig, mix_batch
from trainer.losses import TrainingLoss, adjust_logits, log_prior, sampler_prior, soft_cross_entropy


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


# --- the label prior each sampler produces (derived in trainer/losses.py, counted here) --------------------

# Long-tailed D_o, and a D_g that fills classes up to K = 60 (the head class gets none), as the benchmark does.
COUNTS_O = [60, 25, 9, 3]
COUNTS_G = [0, 35, 51, 57]


def _labels(counts: list[int]) -> list[int]:
    return [c for c, n in enumerate(counts) for _ in range(n)]


def empirical_prior(mode: str, gen_sampling: str, samples: int) -> torch.Tensor:
    """Mean soft target over ``samples`` draws of the real sampler, mixed by the trainer's own mix_batch."""
    labels_o, labels_g = _labels(COUNTS_O), _labels(COUNTS_G)
    labels = torch.tensor(labels_o + labels_g)
    cfg = SamplingConfig(mode=mode, alpha=0.4, gen_sampling=gen_sampling, samples_per_epoch=samples, seed=7)
    keys = list(PairSampler(cfg, labels_o, labels_g))
    i = torch.tensor([k[0] for k in keys])
    j = torch.tensor([k[1] for k in keys])
    lam = torch.tensor([k[2] for k in keys])
    x = torch.zeros(len(keys), 1)  # the inputs do not matter here; mix_batch needs an x_j to mix at all
    partner = x if (j >= 0).all() else torch.empty(0)
    _, target = mix_batch(x, labels[i], partner, labels[j.clamp(min=0)], lam, len(COUNTS_O))
    return target.mean(dim=0)


@pytest.mark.parametrize(("mode", "gen_sampling"), [
    ("plain", "uniform"), ("balanced", "uniform"), ("mixup", "uniform"),
    ("balancemix", "uniform"), ("balancemix", "balanced"),
])
def test_sampler_prior_matches_an_empirical_count_from_the_real_sampler(mode: str, gen_sampling: str) -> None:
    samples = 40_000
    derived = torch.tensor(sampler_prior(mode, COUNTS_O, COUNTS_G, gen_sampling))
    counted = empirical_prior(mode, gen_sampling, samples)
    assert math.isclose(float(derived.sum()), 1.0, rel_tol=1e-9)
    # A soft label's component lies in [0, 1]: its mean has a standard error <= 0.5 / sqrt(n) = 0.0025.
    assert (counted - derived).abs().max() < 0.01, (counted.tolist(), derived.tolist())


def test_balancemix_prior_is_tail_heavy_unlike_the_original_data() -> None:
    bm = sampler_prior("balancemix", COUNTS_O, COUNTS_G)
    original = sampler_prior("plain", COUNTS_O, [0, 0, 0, 0])
    assert bm == sorted(bm) and original == sorted(original, reverse=True)
    # ... and the empirical count tells them apart: the test above would fail for the D_o prior.
    counted = empirical_prior("balancemix", "uniform", 20_000)
    assert (counted - torch.tensor(original)).abs().max() > 0.3


def test_sampler_prior_rejects_mismatched_counts_and_unknown_modes() -> None:
    with pytest.raises(ValueError, match="classes"):
        sampler_prior("plain", [1, 2], [1])
    with pytest.raises(ValueError, match="mode must be one of"):
        sampler_prior("focal", [1], [1])


def test_the_trainer_adjusts_by_the_sampler_prior_or_by_the_original_counts() -> None:
    from argparse import Namespace

    from trainer.driver import DataBundle, build_loss, la_prior
    from trainer.samples import Sample

    def samples(counts: list[int]) -> list[Sample]:
        return [Sample(Path(f"{c}_{k}.png"), c, "x") for c, n in enumerate(counts) for k in range(n)]

    data = DataBundle(["a", "b", "c", "d"], samples(COUNTS_O), samples(COUNTS_G), [], COUNTS_O, {})
    args = Namespace(mode="balancemix", gen_sampling="uniform", loss="logit-adjust", la_tau=1.0, la_prior="sampler")
    prior = la_prior(args, data)
    assert prior == sampler_prior("balancemix", COUNTS_O, COUNTS_G)
    assert torch.allclose(build_loss(args, data, prior).log_pi.exp(), torch.tensor(prior, dtype=torch.float32))
    args.la_prior = "original"  # D_o's counts, Menon et al.'s prior for instance sampling
    original = la_prior(args, data)
    assert torch.allclose(build_loss(args, data, original).log_pi.exp(),
                          torch.tensor(COUNTS_O, dtype=torch.float32) / sum(COUNTS_O))
