"""Metrics on a hand-computed example, group thresholds, and the report files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from trainer.metrics import StridedSampler, compute_metrics, group_of, write_reports


def test_group_thresholds_follow_the_paper() -> None:
    assert [group_of(n) for n in (101, 100, 20, 19, 0)] == ["many", "medium", "medium", "few", "few"]
    assert group_of(11, many=10, few=4) == "many" and group_of(3, many=10, few=4) == "few"


def test_metrics_on_a_hand_computed_example() -> None:
    # classes:       0 (many) 1 (many) 2 (medium) 3 (few) 4 (few, no test images)
    train_counts = [500, 120, 50, 10, 3]
    correct = [9, 3, 2, 1, 0]
    total = [10, 5, 4, 4, 0]
    m = compute_metrics(correct, total, train_counts)
    assert m["overall"] == pytest.approx(100 * 15 / 23)
    assert m["many"] == pytest.approx((90.0 + 60.0) / 2)  # mean of per-class accuracies
    assert m["medium"] == pytest.approx(50.0)
    assert m["few"] == pytest.approx(25.0)  # class 4 has no test images: left out
    assert m["mean_per_class"] == pytest.approx((90 + 60 + 50 + 25) / 4)
    assert m["splits"]["few"] == {"classes": 2, "test_images": 4, "train_images": 13}
    assert m["test_images"] == 23


def test_an_empty_group_is_null() -> None:
    m = compute_metrics([1, 1], [2, 2], [200, 300])
    assert m["medium"] is None and m["few"] is None and m["many"] == 50.0


def test_reports_are_written(tmp_path: Path) -> None:
    correct, total, counts = [4, 1], [4, 4], [150, 5]
    m = compute_metrics(correct, total, counts)
    write_reports(tmp_path, m, correct, total, counts, ["cat", "dog, small"])
    assert json.loads((tmp_path / "metrics.json").read_text())["overall"] == pytest.approx(62.5)
    rows = list(csv.DictReader((tmp_path / "per_class.csv").open()))
    assert rows[1]["name"] == "dog, small" and rows[1]["group"] == "few" and rows[1]["accuracy"] == "25.0000"
    assert (tmp_path / "acc_vs_count.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_strided_sampler_partitions_the_test_set() -> None:
    shares = [list(StridedSampler(10, r, 3)) for r in range(3)]
    assert sorted(sum(shares, [])) == list(range(10))
