"""The long-tail profile: per-class counts, class order and seeded selection (pure functions).

Exponential profile (Cao et al. 2019; Liu et al. 2019 for ImageNet-LT), with C classes and imbalance
factor IF = n_max / n_min:

    n_i = floor(n_max * IF ** (-i / (C - 1)))        for i = 0 .. C-1

Rounding is ``floor``, applied after adding 1e-9 so that values that are whole numbers in exact arithmetic
(always the last class, n_max / IF when IF divides n_max) are not lost to float error: in floats,
``1000 * 100 ** (-8 / 8)`` may come out as ``9.999999999999998``.

>>> lt_counts(1000, 100, 10)
[1000, 599, 359, 215, 129, 77, 46, 27, 16, 10]
>>> lt_counts(8, 4, 3)
[8, 4, 2]

Class ``order[i]`` (a label) receives count ``n_i``. Selection shuffles each class's pool with an RNG
seeded by ``(seed, label)`` and takes a prefix, so (1) classes do not influence each other's draws and
(2) the images left after the prefix are a disjoint, equally seeded reserve (the benchmark draws its
simulated generated data from there).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

from store.errors import UsageError

_EPS = 1e-9


class ProfileError(UsageError):
    """Settings that cannot give a long-tailed split; the message says which and how to fix it."""


def lt_counts(n_max: int, imbalance: float, num_classes: int) -> list[int]:
    """Per-position counts of the exponential profile (see the module docstring for the rounding)."""
    if num_classes < 1:
        raise ProfileError(f"need at least one class, got {num_classes}")
    if n_max < 1:
        raise ProfileError(f"--n-max must be >= 1, got {n_max}")
    if not imbalance >= 1:
        raise ProfileError(f"--imbalance must be >= 1 (n_max / n_min), got {imbalance}")
    if num_classes == 1:
        return [n_max]
    counts = [
        math.floor(n_max * imbalance ** (-i / (num_classes - 1)) + _EPS) for i in range(num_classes)
    ]
    if counts[-1] < 1:
        raise ProfileError(
            f"n_max={n_max} with imbalance {imbalance} leaves the rarest class with 0 images; "
            "raise --n-max or lower --imbalance"
        )
    return counts


def class_order(spec: str, class_names: Sequence[str], seed: int) -> list[int]:
    """Labels in the order that receives ``n_0, n_1, ...``.

    ``spec`` is ``natural`` (label order), ``random`` (a permutation seeded by ``seed``), or a
    comma-separated list naming every class once, by name or by label.

    >>> class_order("b,0,c", ["a", "b", "c"], seed=0)
    [1, 0, 2]
    """
    labels = list(range(len(class_names)))
    if spec == "natural":
        return labels
    if spec == "random":
        random.Random(f"class-order:{seed}").shuffle(labels)
        return labels
    index = {name: i for i, name in enumerate(class_names)}
    order: list[int] = []
    for item in (part.strip() for part in spec.split(",")):
        label = index.get(item)
        if label is None and item.isdigit() and int(item) < len(class_names):
            label = int(item)
        if label is None:
            raise ProfileError(f"--class-order: {item!r} is neither a class name nor a label 0..{len(labels) - 1}")
        if label in order:
            raise ProfileError(f"--class-order: class {class_names[label]!r} is listed twice")
        order.append(label)
    if len(order) != len(labels):
        missing = [class_names[i] for i in labels if i not in order]
        raise ProfileError(f"--class-order must list every class once; missing {missing[:5]}")
    return order


def shuffled_pools(labels: Sequence[int], num_classes: int, seed: int) -> list[list[int]]:
    """Indices of each class, in a seeded order that depends only on ``(seed, label)``.

    >>> shuffled_pools([0, 1, 0, 1], 2, seed=0) == shuffled_pools([0, 1, 0, 1], 2, seed=0)
    True
    """
    pools: list[list[int]] = [[] for _ in range(num_classes)]
    for index, label in enumerate(labels):
        pools[label].append(index)
    for label, pool in enumerate(pools):
        # A string seed is hashed with SHA-512 by `random`, so it is stable across runs and PYTHONHASHSEED.
        random.Random(f"pool:{seed}:{label}").shuffle(pool)
    return pools


def take_counts(
    pools: Sequence[Sequence[int]], wanted: Mapping[int, int], class_names: Sequence[str], what: str
) -> dict[int, list[int]]:
    """The first ``wanted[label]`` indices of each pool, or a ``ProfileError`` naming the short class."""
    taken: dict[int, list[int]] = {}
    for label, n in wanted.items():
        if n > len(pools[label]):
            raise ProfileError(
                f"class {class_names[label]!r} has {len(pools[label])} images available for {what} "
                f"but needs {n}; lower --n-max (or --test-per-class)"
            )
        taken[label] = list(pools[label][:n])
    return taken


def counts_by_label(order: Sequence[int], counts: Sequence[int]) -> dict[int, int]:
    """``{label: n}`` from a class order and the per-position counts.

    >>> counts_by_label([2, 0, 1], [9, 5, 1])
    {2: 9, 0: 5, 1: 1}
    """
    return {label: n for label, n in zip(order, counts, strict=True)}


def split_group(count: int, many: int = 100, few: int = 20) -> str:
    """``many`` (> many), ``few`` (< few) or ``medium``: the paper's thresholds by default.

    >>> [split_group(n) for n in (101, 100, 20, 19)]
    ['many', 'medium', 'medium', 'few']
    """
    if count > many:
        return "many"
    if count < few:
        return "few"
    return "medium"
