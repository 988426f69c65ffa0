"""BalanceMix samplers and mixing: properties over many draws, and the paper's equations on tensors."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from trainer.balancemix import (
    PairSampler,
    SamplingConfig,
    class_balanced_draws,
    epoch_plan,
    instance_draws,
    mix_batch,
    shard,
)

# Long-tailed D_o (class 0 has 200 images, class 3 has 1) and a small D_g.
LABELS_O = [0] * 200 + [1] * 40 + [2] * 8 + [3] * 1
LABELS_G = [1] * 5 + [2] * 10 + [3] * 20
CHI2_DF3_P001 = 16.27  # chi-square critical value, 3 degrees of freedom, p = 0.001


def chi_square_vs_uniform(labels: list[int], classes: int) -> float:
    counts = Counter(labels)
    expected = len(labels) / classes
    return sum((counts.get(c, 0) - expected) ** 2 / expected for c in range(classes))


def test_class_balanced_draws_are_uniform_over_classes() -> None:
    rng = np.random.default_rng(1)
    labels = np.asarray(LABELS_O)
    draws = class_balanced_draws(np.arange(len(labels)), labels, 20000, rng)
    assert chi_square_vs_uniform(labels[draws].tolist(), 4) < CHI2_DF3_P001
    # The same statistic rejects instance sampling on this long tail: the bound can fail.
    inst = instance_draws(np.arange(len(labels)), 20000, rng)
    assert chi_square_vs_uniform(labels[inst].tolist(), 4) > 1000


def test_class_balanced_draws_are_uniform_within_a_class() -> None:
    labels = np.asarray(LABELS_O)
    draws = class_balanced_draws(np.arange(len(labels)), labels, 40000, np.random.default_rng(2))
    in_class_2 = Counter(d for d in draws.tolist() if labels[d] == 2)
    assert sorted(in_class_2) == list(range(240, 248))
    expected = sum(in_class_2.values()) / 8
    assert sum((v - expected) ** 2 / expected for v in in_class_2.values()) < 24.3  # df 7, p 0.001


def test_instance_draws_cover_the_pool_once_per_pass() -> None:
    draws = instance_draws(np.arange(10, 17), 7 * 3, np.random.default_rng(0))
    for p in range(3):
        assert sorted(draws[p * 7:(p + 1) * 7].tolist()) == list(range(10, 17))


def test_balancemix_partners_come_only_from_generated_data() -> None:
    cfg = SamplingConfig(mode="balancemix", alpha=1.0, samples_per_epoch=5000, seed=3)
    plan = epoch_plan(cfg, LABELS_O, LABELS_G, epoch=0)
    n_o = len(LABELS_O)
    assert plan.i.max() < n_o and plan.i.min() >= 0
    assert plan.j.min() >= n_o and plan.j.max() < n_o + len(LABELS_G)
    assert chi_square_vs_uniform([LABELS_O[k] for k in plan.i], 4) < CHI2_DF3_P001
    # Uniform x_j follows D_g's own class mix (5/10/20); balanced x_j is uniform over D_g's classes.
    by_class = Counter(LABELS_G[k - n_o] for k in plan.j)
    assert by_class[3] > 3 * by_class[1]
    bal = epoch_plan(SamplingConfig(mode="balancemix", gen_sampling="balanced", samples_per_epoch=6000, seed=3),
                     LABELS_O, LABELS_G, epoch=0)
    gen_labels = [LABELS_G[k - n_o] for k in bal.j]
    counts = Counter(gen_labels)
    assert set(counts) == {1, 2, 3} and max(counts.values()) < 1.1 * min(counts.values())


@pytest.mark.parametrize("alpha", [0.2, 1.0, 5.0])
def test_lambda_is_in_unit_interval_and_follows_alpha(alpha: float) -> None:
    plan = epoch_plan(SamplingConfig(mode="mixup", alpha=alpha, samples_per_epoch=4000, seed=0),
                      LABELS_O, LABELS_G, 0)
    assert plan.lam.min() >= 0.0 and plan.lam.max() <= 1.0
    assert abs(float(plan.lam.mean()) - 0.5) < 0.03  # Beta(a, a) is symmetric around 1/2
    spread = float(np.mean(np.abs(plan.lam - 0.5)))
    assert (spread > 0.3) if alpha < 1 else (spread < 0.2 if alpha > 1 else 0.2 < spread < 0.3)


def test_unmixed_modes_have_no_partner_and_plain_is_a_permutation() -> None:
    n = len(LABELS_O) + len(LABELS_G)
    plain = epoch_plan(SamplingConfig(mode="plain", seed=0), LABELS_O, LABELS_G, 0)
    assert sorted(plain.i.tolist()) == list(range(n))
    assert (plain.j == -1).all() and (plain.lam == 1.0).all()
    balanced = epoch_plan(SamplingConfig(mode="balanced", seed=0, samples_per_epoch=8000), LABELS_O, LABELS_G, 0)
    all_labels = LABELS_O + LABELS_G
    assert chi_square_vs_uniform([all_labels[k] for k in balanced.i], 4) < CHI2_DF3_P001


def test_plans_are_deterministic_and_change_with_epoch_and_seed() -> None:
    cfg = SamplingConfig(mode="balancemix", seed=7)
    a, b = epoch_plan(cfg, LABELS_O, LABELS_G, 1), epoch_plan(cfg, LABELS_O, LABELS_G, 1)
    assert (a.i == b.i).all() and (a.j == b.j).all() and (a.lam == b.lam).all()
    assert not (a.i == epoch_plan(cfg, LABELS_O, LABELS_G, 2).i).all()
    other = epoch_plan(SamplingConfig(mode="balancemix", seed=8), LABELS_O, LABELS_G, 1)
    assert not (a.i == other.i).all()


def test_sampler_shards_by_rank_with_equal_lengths() -> None:
    cfg = SamplingConfig(mode="balancemix", samples_per_epoch=101, seed=0)
    full = epoch_plan(cfg, LABELS_O, LABELS_G, 4)
    parts = []
    for rank in range(3):
        s = PairSampler(cfg, LABELS_O, LABELS_G, rank=rank, world=3)
        s.set_epoch(4)
        keys = list(s)
        assert len(keys) == len(s) == 34
        parts.append(keys)
    merged = [parts[k % 3][k // 3] for k in range(101)]
    assert [m[0] for m in merged] == full.i.tolist() and [m[1] for m in merged] == full.j.tolist()
    assert shard(full, 0, 1).i.tolist() == full.i.tolist()


def test_sampler_state_round_trips_and_rejects_a_foreign_seed() -> None:
    s = PairSampler(SamplingConfig(mode="plain", seed=1), LABELS_O, [])
    s.set_epoch(5)
    t = PairSampler(SamplingConfig(mode="plain", seed=1), LABELS_O, [])
    t.load_state_dict(s.state_dict())
    assert list(t) == list(s)
    with pytest.raises(ValueError, match="seed"):
        PairSampler(SamplingConfig(mode="plain", seed=2), LABELS_O, []).load_state_dict(s.state_dict())


def test_balancemix_without_generated_data_is_an_error() -> None:
    with pytest.raises(ValueError, match="--generated"):
        PairSampler(SamplingConfig(mode="balancemix"), LABELS_O, [])
    with pytest.raises(ValueError, match="alpha"):
        SamplingConfig(mode="mixup", alpha=0.0)


def test_mixing_equation_is_exact_and_soft_labels_sum_to_one() -> None:
    g = torch.Generator().manual_seed(0)
    x_i, x_j = torch.rand(4, 3, 5, 5, generator=g), torch.rand(4, 3, 5, 5, generator=g)
    y_i, y_j = torch.tensor([0, 1, 2, 3]), torch.tensor([3, 3, 0, 3])
    lam = torch.tensor([0.0, 0.25, 0.5, 1.0])
    x, y = mix_batch(x_i, y_i, x_j, y_j, lam, num_classes=5)
    for b in range(4):
        assert torch.equal(x[b], lam[b] * x_i[b] + (1 - lam[b]) * x_j[b])
        expected = torch.zeros(5)
        expected[y_i[b]] += lam[b]
        expected[y_j[b]] += 1 - lam[b]
        assert torch.allclose(y[b], expected)
    assert torch.allclose(y.sum(dim=1), torch.ones(4))
    assert y[1].tolist() == [0.0, 0.25, 0.0, 0.75, 0.0]


def test_batch_without_partners_is_returned_unmixed() -> None:
    x_i = torch.rand(2, 3, 4, 4)
    x, y = mix_batch(x_i, torch.tensor([1, 0]), torch.empty(2, 0), torch.tensor([-1, -1]), torch.ones(2), 3)
    assert x is x_i
    assert y.tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
