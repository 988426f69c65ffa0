"""BalanceMix (LTGC §3.2) and the ablation modes, as pure seeded functions plus one torch ``Sampler``.

Index space: the trainer concatenates the original data D_o (indices ``0 .. n_o-1``) and the generated data
D_g (indices ``n_o .. n_o+n_g-1``); every draw below is an index into that concatenation.

Modes (Table 4 of the paper):
- ``plain``      x from D_o ∪ D_g by instance sampling (shuffled passes); no mixing.
- ``balanced``   x from D_o ∪ D_g class-balanced (class uniform, then image uniform); no mixing.
- ``mixup``      x_i and x_j both instance-sampled from D_o ∪ D_g, independently; mixed.
- ``balancemix`` x_i class-balanced from D_o; x_j from D_g (uniform, or class-balanced with
  ``gen_sampling="balanced"``); mixed. Needs a non-empty D_g.

Mixing (per sample, λ ~ Beta(α, α)):  x̃ = λ·x_i + (1−λ)·x_j,  ỹ = λ·onehot(y_i) + (1−λ)·onehot(y_j).
Unmixed modes use j = -1 and λ = 1, so ỹ = onehot(y_i) and the soft-target loss is plain cross-entropy.

Determinism: an epoch's plan is a pure function of (seed, epoch, labels, config): a resumed run or another
rank computes exactly the same draws. :class:`PairSampler` shards the plan by rank (strided, padded by
wrapping so every rank gets the same number of batches, as ``DistributedSampler`` does).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Sampler

from trainer.choices import MIXING_MODES, MODES

__all__ = ["MIXING_MODES", "MODES", "PairSampler", "SamplingConfig", "epoch_plan", "mix_batch"]



@dataclass(frozen=True)
class SamplingConfig:
    """How one epoch is drawn. ``samples_per_epoch=None`` means |D_o| + |D_g| (the whole training pool)."""

    mode: str
    alpha: float = 1.0
    gen_sampling: str = "uniform"
    samples_per_epoch: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.gen_sampling not in ("uniform", "balanced"):
            raise ValueError(f"gen_sampling must be uniform or balanced, got {self.gen_sampling!r}")
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0 (λ ~ Beta(α, α)), got {self.alpha}")


@dataclass(frozen=True)
class EpochPlan:
    """Parallel arrays, one entry per training sample: partner ``j`` is -1 when there is no mixing."""

    i: np.ndarray
    j: np.ndarray
    lam: np.ndarray

    def __len__(self) -> int:
        return len(self.i)


def instance_draws(pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` draws from ``pool`` by shuffled passes: every element once per pass, passes concatenated.

    >>> sorted(instance_draws(np.arange(3), 3, np.random.default_rng(0)).tolist())
    [0, 1, 2]
    """
    if len(pool) == 0:
        raise ValueError("cannot sample from an empty pool")
    passes = -(-n // len(pool))
    return np.concatenate([rng.permutation(pool) for _ in range(passes)])[:n]


def class_balanced_draws(pool: np.ndarray, labels: np.ndarray, n: int,
                         rng: np.random.Generator) -> np.ndarray:
    """``n`` draws from ``pool``: a class uniformly among the classes present, then an image uniformly in it.

    ``labels[k]`` is the label of ``pool[k]``. Draws are with replacement, so a class with one image is
    drawn as often as a class with a thousand.
    """
    if len(pool) == 0:
        raise ValueError("cannot sample from an empty pool")
    order = np.argsort(labels, kind="stable")
    sorted_pool = pool[order]
    classes, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    cls = rng.integers(len(classes), size=n)
    offset = np.floor(rng.random(n) * counts[cls]).astype(np.int64)
    return sorted_pool[starts[cls] + offset]


def beta_lambdas(alpha: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Per-sample mixing weights λ ~ Beta(α, α), each in [0, 1]."""
    return rng.beta(alpha, alpha, size=n).astype(np.float32)


def epoch_plan(cfg: SamplingConfig, labels_o: Sequence[int], labels_g: Sequence[int], epoch: int) -> EpochPlan:
    """The draws of one epoch (all ranks together), a pure function of its arguments."""
    lo = np.asarray(labels_o, dtype=np.int64)
    lg = np.asarray(labels_g, dtype=np.int64)
    n_o, n_g = len(lo), len(lg)
    if cfg.mode == "balancemix" and n_g == 0:
        raise ValueError("mode balancemix draws x_j from generated data: pass --generated")
    n = cfg.samples_per_epoch if cfg.samples_per_epoch is not None else n_o + n_g
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, epoch]))
    all_idx = np.arange(n_o + n_g)
    all_labels = np.concatenate([lo, lg])
    none = np.full(n, -1, dtype=np.int64)
    ones = np.ones(n, dtype=np.float32)
    if cfg.mode == "plain":
        return EpochPlan(instance_draws(all_idx, n, rng), none, ones)
    if cfg.mode == "balanced":
        return EpochPlan(class_balanced_draws(all_idx, all_labels, n, rng), none, ones)
    if cfg.mode == "mixup":
        i = instance_draws(all_idx, n, rng)
        j = instance_draws(all_idx, n, rng)
        return EpochPlan(i, j, beta_lambdas(cfg.alpha, n, rng))
    i = class_balanced_draws(np.arange(n_o), lo, n, rng)
    gen_idx = np.arange(n_o, n_o + n_g)
    if cfg.gen_sampling == "balanced":
        j = class_balanced_draws(gen_idx, lg, n, rng)
    else:
        j = instance_draws(gen_idx, n, rng)
    return EpochPlan(i, j, beta_lambdas(cfg.alpha, n, rng))


def shard(plan: EpochPlan, rank: int, world: int) -> EpochPlan:
    """Rank ``rank``'s strided share, after padding by wrapping so all ranks get equally many samples."""
    total = -(-len(plan) // world) * world
    idx = np.resize(np.arange(len(plan)), total)[rank::world]
    return EpochPlan(plan.i[idx], plan.j[idx], plan.lam[idx])


class PairSampler(Sampler[tuple[int, int, float]]):
    """Yields ``(i, j, λ)`` keys for :class:`trainer.data.PairDataset`; call :meth:`set_epoch` each epoch."""

    def __init__(self, cfg: SamplingConfig, labels_o: Sequence[int], labels_g: Sequence[int],
                 rank: int = 0, world: int = 1) -> None:
        self.cfg = cfg
        self.labels_o = list(labels_o)
        self.labels_g = list(labels_g)
        self.rank, self.world = rank, world
        self.epoch = 0
        # Fail at construction, not at the first iteration of the first epoch.
        if cfg.mode == "balancemix" and not self.labels_g:
            raise ValueError("mode balancemix draws x_j from generated data: pass --generated")
        if not self.labels_o:
            raise ValueError("the original training data is empty")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def plan(self) -> EpochPlan:
        return shard(epoch_plan(self.cfg, self.labels_o, self.labels_g, self.epoch), self.rank, self.world)

    def __iter__(self) -> Iterator[tuple[int, int, float]]:
        p = self.plan()
        return iter(zip(p.i.tolist(), p.j.tolist(), p.lam.tolist(), strict=True))

    def __len__(self) -> int:
        n = self.cfg.samples_per_epoch
        n = n if n is not None else len(self.labels_o) + len(self.labels_g)
        return -(-n // self.world)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "seed": self.cfg.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["seed"] != self.cfg.seed:
            raise ValueError(f"sampler seed {self.cfg.seed} differs from the checkpoint's {state['seed']}")
        self.epoch = int(state["epoch"])


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[1, 0], 3 -> [[0, 1, 0], [1, 0, 0]]`` as float32."""
    return torch.nn.functional.one_hot(labels.long(), num_classes).float()


def mix_batch(x_i: torch.Tensor, y_i: torch.Tensor, x_j: torch.Tensor, y_j: torch.Tensor, lam: torch.Tensor,
              num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x̃ = λ·x_i + (1−λ)·x_j and ỹ = λ·onehot(y_i) + (1−λ)·onehot(y_j), λ per sample.

    Shapes: x (B, C, H, W), y (B,), lam (B,) -> x̃ (B, C, H, W), ỹ (B, num_classes). A batch without
    partners (``x_j`` empty) returns ``x_i`` and one-hot targets unchanged.
    """
    target_i = one_hot(y_i, num_classes)
    if x_j.numel() == 0:
        return x_i, target_i
    lam_x = lam.to(x_i.dtype).view(-1, *([1] * (x_i.dim() - 1)))
    lam_y = lam.to(target_i.dtype).view(-1, 1)
    mixed = lam_x * x_i + (1.0 - lam_x) * x_j
    target = lam_y * target_i + (1.0 - lam_y) * one_hot(y_j, num_classes)
    return mixed, target
