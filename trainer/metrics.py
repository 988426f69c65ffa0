"""Evaluation: top-1 overall and by many / medium / few shot, per-class CSV, metrics JSON, a PNG plot.

Contract
- Groups come from the *original* training counts n_c (D_o only, never D_g): many if n_c > ``many``
  (default 100), few if n_c < ``few`` (default 20), medium otherwise — the paper's split.
- Accuracies are top-1 in percent. ``overall`` is over test images; a group's accuracy is the mean of its
  classes' accuracies (classes without test images are left out), as in the decoupling code ImageNet-LT
  results are usually computed with; on a balanced test set the two coincide. An empty group is ``null``.
- :func:`count_correct` gathers per-class (correct, total) on this rank's share of the test set and sums
  them over ranks, so metrics under DDP equal a single-process run.
- Files written by :func:`write_reports`, each atomically: ``metrics.json``, ``per_class.csv``
  (``label,name,train_count,group,test_images,correct,accuracy``) and ``acc_vs_count.png``
  (:func:`accuracy_figure`: log x-axis with 1-2-5 ticks, labelled many / few bounds, a title).
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

from store.manifest import atomic_write_bytes, atomic_write_text
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
    """Write :func:`accuracy_figure` as a PNG, atomically (a full disk leaves the old plot, not half a file)."""
    import matplotlib.pyplot as plt

    fig = accuracy_figure(correct, total, train_counts, many, few)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def accuracy_figure(correct: Sequence[int], total: Sequence[int], train_counts: Sequence[int],
                    many: int, few: int) -> Any:
    """Per-class accuracy against original training count: log x with 1-2-5 ticks, labelled group bounds.

    The x range always spans both thresholds, so the many / medium / few bands (and several ticks) show.
    """
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=100)
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.12, top=0.88)  # tight_layout costs ~1 s
    colours = {"many": "tab:blue", "medium": "tab:orange", "few": "tab:red"}
    for g in GROUPS:
        pts = [(max(n, 1), 100.0 * c / t) for n, c, t in zip(train_counts, correct, total, strict=True)
               if t and group_of(n, many, few) == g]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, label=f"{g} ({len(pts)})", color=colours[g])
    counts = [max(n, 1) for n in train_counts] or [1]
    ax.set_xscale("log")
    ax.set_xlim(min(*counts, max(few, 1)) / 1.5, max(*counts, max(many, 1)) * 1.5)
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())  # "100", not "10^2"
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    for x, text, side in ((few, f"few: < {few}", "right"), (many, f"many: > {many}", "left")):
        ax.axvline(x, color="grey", linestyle=":", linewidth=1)
        ax.text(x * (0.93 if side == "right" else 1.07), 99, text, ha=side, va="top", fontsize=8, color="dimgrey")
    ax.set_xlabel("training images of the class (original data, log scale)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(-2, 104)
    n_test = sum(total)
    overall = f"overall {100.0 * sum(correct) / n_test:.1f}% on {n_test} test images" if n_test else "no test images"
    ax.set_title(f"Per-class top-1 accuracy vs. training images\n({overall}; one dot per class)", fontsize=10)
    ax.legend(loc="best", fontsize=8)
    return fig
