"""Evaluation: top-1 overall and by many / medium / few shot, per-class CSV, metrics JSON, a PNG plot.

Contract
- Groups come from the *original* training counts n_c (D_o only, never D_g): many if n_c > ``many``
  (default 100), few if n_c < ``few`` (default 20), medium otherwise — the paper's split.
- Accuracies are top-1 in percent. ``overall`` is over test images; a group's accuracy is the mean of its
  classes' accuracies (classes without test images are left out), as in the decoupling code ImageNet-LT
  results are usually computed with; on a balanced test set the two coincide. An empty group is ``null``.
- :func:`count_correct` gathers per-class (correct, total) on this rank's share of the test set and sums
  them over ranks, so metrics under DDP equal a single-process run.
- Files written by :func:`write_reports`: ``metrics.json``, ``per_class.csv``
  (``label,name,train_count,group,test_images,correct,accuracy``) and ``acc_vs_count.png``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from store.manifest import atomic_write_text
from trainer.data import dump_json
from trainer.loop import Runtime

GROUPS = ("many", "medium", "few")


def group_of(train_count: int, many: int = 100, few: int = 20) -> str:
    """``150 -> 'many'``, ``100 -> 'medium'``, ``20 -> 'medium'``, ``19 -> 'few'`` (defaults)."""
    if train_count > many:
        return "many"
    if train_count < few:
        return "few"
    return "medium"


def compute_metrics(correct: Sequence[int], total: Sequence[int], train_counts: Sequence[int],
                    many: int = 100, few: int = 20) -> dict[str, Any]:
    """Overall and per-group top-1 (percent) from per-class counts; see the module docstring.

    >>> m = compute_metrics([8, 3, 0], [10, 5, 2], [150, 50, 5])
    >>> round(m["overall"], 2), m["many"], m["medium"], m["few"]
    (64.71, 80.0, 60.0, 0.0)
    """
    n_test = sum(total)
    per_class = [100.0 * c / t if t else None for c, t in zip(correct, total, strict=True)]
    metrics: dict[str, Any] = {
        "overall": 100.0 * sum(correct) / n_test if n_test else None,
        "test_images": n_test,
        "thresholds": {"many": many, "few": few},
        "splits": {},
    }
    scored = [a for a in per_class if a is not None]
    metrics["mean_per_class"] = sum(scored) / len(scored) if scored else None
    for g in GROUPS:
        members = [k for k, n in enumerate(train_counts) if group_of(n, many, few) == g]
        accs = [a for a in (per_class[k] for k in members) if a is not None]
        metrics[g] = sum(accs) / len(accs) if accs else None
        metrics["splits"][g] = {"classes": len(members), "test_images": sum(total[k] for k in members),
                                "train_images": sum(train_counts[k] for k in members)}
    return metrics


class StridedSampler(Sampler[int]):
    """Rank ``rank``'s test indices ``rank, rank + world, ...`` — no padding, so nothing is counted twice."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def count_correct(model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], rt: Runtime,
                  num_classes: int) -> tuple[list[int], list[int]]:
    """Per-class (correct, total) over the whole test set (summed over ranks). Plain logits: no adjustment."""
    model.eval()
    correct = torch.zeros(num_classes, dtype=torch.int64)
    total = torch.zeros(num_classes, dtype=torch.int64)
    with torch.no_grad():
        for images, labels in loader:
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=rt.amp):
                logits = model(images.to(rt.device, non_blocking=True))
            pred = logits.argmax(dim=-1).cpu()
            total += torch.bincount(labels, minlength=num_classes)
            correct += torch.bincount(labels[pred == labels], minlength=num_classes)
    if rt.world > 1:
        both = torch.stack([correct, total])
        dist.all_reduce(both)
        correct, total = both[0], both[1]
    return correct.tolist(), total.tolist()


def write_reports(out: Path, metrics: dict[str, Any], correct: Sequence[int], total: Sequence[int],
                  train_counts: Sequence[int], class_names: Sequence[str]) -> None:
    """Write ``metrics.json``, ``per_class.csv`` and ``acc_vs_count.png`` into ``out``."""
    many, few = metrics["thresholds"]["many"], metrics["thresholds"]["few"]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", dump_json(metrics))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["label", "name", "train_count", "group", "test_images", "correct", "accuracy"])
    for k, name in enumerate(class_names):
        acc = f"{100.0 * correct[k] / total[k]:.4f}" if total[k] else ""
        writer.writerow([k, name, train_counts[k], group_of(train_counts[k], many, few), total[k],
                         correct[k], acc])
    atomic_write_text(out / "per_class.csv", buf.getvalue())
    plot_accuracy_vs_count(out / "acc_vs_count.png", correct, total, train_counts, many, few)


def plot_accuracy_vs_count(path: Path, correct: Sequence[int], total: Sequence[int],
                           train_counts: Sequence[int], many: int, few: int) -> None:
    """Scatter of per-class accuracy against original training count (log x), coloured by group."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.13, top=0.95)  # tight_layout costs ~1 s
    colours = {"many": "tab:blue", "medium": "tab:orange", "few": "tab:red"}
    for g in GROUPS:
        pts = [(max(n, 1), 100.0 * c / t) for n, c, t in zip(train_counts, correct, total, strict=True)
               if t and group_of(n, many, few) == g]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, label=g, color=colours[g])
    for x in (few, many):
        ax.axvline(x, color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())  # "100", not "10^2"
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("training images of the class (original data)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.legend(loc="lower right")
    fig.savefig(path)
    plt.close(fig)
