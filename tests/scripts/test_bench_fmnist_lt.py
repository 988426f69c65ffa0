"""Tests for the Fashion-MNIST-LT benchmark: simulated D_g, row settings, aggregation and the --quick run.

The --quick run uses a small synthetic Fashion-MNIST-shaped IDX folder (real trainer, tiny ViT), so the test
needs neither the dataset package nor pretrained weights; it asserts the table's shape, never accuracy.
"""

from __future__ import annotations

import doctest
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from scripts.bench import bench_fmnist_lt as bench
from scripts.lt import runner
from scripts.lt.profile import lt_counts
from scripts.lt.runner import DEFAULT_MODEL, Job
from scripts.lt.simulated_gen import domain_shift, fill_counts
from store.manifest import read_manifest
from tests.scripts.test_lt_tools import fake_fashion_mnist


def test_missing_dataset_is_one_line_naming_the_install_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = bench.main(["--quick", "--data-dir", str(tmp_path / "absent"), "--work", str(tmp_path / "w")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert "apt-get install -y dataset-fashion-mnist" in err and str(tmp_path / "absent") in err


def test_domain_shift_is_fixed_and_changes_the_domain() -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), mode="L")
    a, b = np.asarray(domain_shift(img)), np.asarray(domain_shift(img))
    assert a.shape == (28, 28) and np.array_equal(a, b)  # one deterministic function
    original = np.asarray(img, dtype=np.float32)
    assert a.std() < original.std()  # blur + contrast: less spread
    black = np.asarray(domain_shift(Image.new("L", (28, 28), 0)), dtype=np.float32)
    assert black.mean() > 20 and black.std() > 5  # lifted background carrying the stripe texture


def test_fill_counts_tops_classes_up_to_k_only() -> None:
    assert fill_counts({0: 1000, 1: 300, 2: 129, 3: 10}, 300) == {0: 0, 1: 0, 2: 171, 3: 290}


def test_rows_share_compute_and_differ_only_in_mode_loss_and_dg(tmp_path: Path) -> None:
    cfg = bench.BenchConfig(work=tmp_path)
    data = {"split": tmp_path / "split", "model": tmp_path / "m.json",
            "generated": {"shift": Path("gs.jsonl"), "clean": Path("gc.jsonl"), "original": Path("do.txt")}}
    argvs = {row.key: bench.trainer_argv(cfg, data, row, 1, tmp_path / row.key) for row in bench.ROWS}

    def opt(argv: list[str], flag: str) -> str | None:
        return argv[argv.index(flag) + 1] if flag in argv else None

    for flag in ("--epochs", "--samples-per-epoch", "--batch-size", "--lr", "--seed", "--model", "--tune"):
        assert len({opt(a, flag) for a in argvs.values()}) == 1, flag
    assert opt(argvs["ce"], "--generated") is None and opt(argvs["logit_adjust"], "--loss") == "logit-adjust"
    assert opt(argvs["balancemix"], "--generated") == "gs.jsonl"
    assert opt(argvs["balancemix_clean"], "--generated") == "gc.jsonl"
    assert opt(argvs["balancemix_do"], "--generated") == "do.txt"
    # The new row: BalanceMix's sampler and D_g, with the logit-adjusted loss (its prior is the sampler's).
    assert [opt(argvs["balancemix_la"], f) for f in ("--mode", "--loss", "--generated")] == [
        "balancemix", "logit-adjust", "gs.jsonl"]
    assert "--la-prior" not in argvs["balancemix_la"]  # the trainer's default: the sampler's prior
    assert opt(argvs["ce"], "--samples-per-epoch") == str(cfg.steps * cfg.batch_size)  # one epoch of `steps`
    assert [opt(argvs[k], "--mode") for k in ("plain", "balanced", "mixup", "balancemix")] == [
        "plain", "balanced", "mixup", "balancemix"]


def test_aggregate_mean_and_sample_std_and_table_format() -> None:
    runs = [{"row": "ce", "metrics": {"overall": v, "many": v + 10, "medium": v, "few": None}}
            for v in (50.0, 54.0, 52.0)]
    runs.append({"row": "plain", "metrics": {"overall": 1.0, "many": 2.0, "medium": 3.0, "few": 4.0}})
    table = bench.aggregate(runs)
    assert [t["row"] for t in table] == ["ce", "plain"]
    assert table[0]["overall"] == {"mean": 52.0, "std": 2.0} and table[0]["many"]["mean"] == 62.0
    assert table[0]["few"] is None and table[1]["few"] == {"mean": 4.0, "std": 0.0}
    lines = bench.format_table(table, 3).splitlines()
    assert lines[0] == "| row (3 seeds) | all | many | medium | few |"
    assert lines[2] == "| no D_g (CE) | 52.00 ± 2.00 | 62.00 ± 2.00 | 52.00 ± 2.00 | n/a |"


def test_quick_benchmark_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = fake_fashion_mnist(tmp_path / "fm", train_per_class=60, test_per_class=10)
    work = tmp_path / "work"
    assert bench.main(["--quick", "--data-dir", str(data_dir), "--work", str(work)]) == 0
    printed = capsys.readouterr().out
    assert "not converged" in printed  # 4 steps: far below the measured converged budget

    results = json.loads((work / "results.json").read_text())
    assert results["budget"]["converged"] is False and "not converged" in results["budget"]["note"]
    assert results["machine"]["start"]["load_average"] and results["wall_s"] > 0
    assert [t["row"] for t in results["table"]] == [r.key for r in bench.ROWS]
    for entry in results["table"]:
        assert entry["seeds"] == 1
        for group in bench.GROUPS:
            assert 0.0 <= entry[group]["mean"] <= 100.0 and entry[group]["std"] == 0.0
    assert len(results["runs"]) == len(bench.ROWS) and all(r["status"] == 0 for r in results["runs"])
    lines = (work / "results.md").read_text().splitlines()
    table_lines, rest = lines[:2 + len(bench.ROWS)], lines[2 + len(bench.ROWS):]
    assert all(ln.count("|") == 6 for ln in table_lines)
    assert rest == ["", rest[1]] and "not converged" in rest[1]
    assert results["verdict"] is None  # one seed: no std, so no "better by more than one std" either way


    # D_g: filled up to K per class, same source images in both variants, none of them in D_o.
    shifted, clean = (read_manifest(work / f"gen-{v}" / "manifest.jsonl") for v in ("shift", "clean"))
    expected = fill_counts({i: n for i, n in enumerate(results["data"]["train"].values())}, bench.QUICK["k"])
    assert {label: sum(r.label == label for r in shifted) for label in expected} == expected
    assert [r.path for r in shifted] == [r.path for r in clean]
    assert {r.sha256 for r in shifted}.isdisjoint({r.sha256 for r in clean})
    d_o = {(ln.split()[0].split("/")[-1], ln.split()[1]) for ln in (work / "split/train.txt").read_text().splitlines()}
    assert d_o.isdisjoint({(r.path.split("/")[-1], str(r.label)) for r in shifted})

    # A second run in the same work folder reuses every finished run instead of failing on its checkpoint.
    capsys.readouterr()
    assert bench.main(["--quick", "--data-dir", str(data_dir), "--work", str(work)]) == 0
    assert capsys.readouterr().out.count("reusing the finished run") == len(bench.ROWS)
    assert json.loads((work / "results.json").read_text())["table"] == results["table"]


def test_split_profile_flags_shape_the_split_and_are_recorded(tmp_path: Path) -> None:
    data_dir = fake_fashion_mnist(tmp_path / "fm", train_per_class=60, test_per_class=10)
    work = tmp_path / "work"
    argv = ["--quick", "--data-dir", str(data_dir), "--work", str(work), "--rows", "ce", "--steps", "1",
            "--n-max", "30", "--imbalance", "6", "--k", "12", "--split-seed", "3"]
    assert bench.main(argv) == 0
    results = json.loads((work / "results.json").read_text())
    config = results["config"]
    assert (config["n_max"], config["imbalance"], config["k"], config["split_seed"]) == (30, 6.0, 12, 3)
    counts = list(results["data"]["train"].values())
    assert counts == lt_counts(30, 6.0, 10)
    assert list(results["data"]["generated"].values()) == [max(0, 12 - n) for n in counts]
    split = json.loads((work / "split" / "split.json").read_text())
    assert split["config"]["seed"] == 3
    # Another split seed picks other images for the same profile.
    other = tmp_path / "other"
    assert bench.main([*argv[:4], str(other), *argv[5:-1], "4"]) == 0
    assert (other / "split" / "train.txt").read_text() != (work / "split" / "train.txt").read_text()


@pytest.mark.parametrize(("flags", "message"), [
    (["--steps", "0"], "--steps must be >= 1"),
    (["--steps", "5", "--epochs", "2"], "not a multiple of --epochs"),
    (["--imbalance", "0.5"], "--imbalance must be >= 1"),
    (["--n-max", "3", "--imbalance", "10"], "raise --n-max"),
])
def test_unusable_settings_are_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              flags: list[str], message: str) -> None:
    data_dir = fake_fashion_mnist(tmp_path / "fm", train_per_class=20, test_per_class=10)
    rc = bench.main(["--quick", "--data-dir", str(data_dir), "--work", str(tmp_path / "w"), *flags])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("bench_fmnist_lt: error:") and "\n" not in err and message in err


def test_budget_note_says_not_converged_below_the_measured_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    # Today no measured budget met the rule: every budget is "not converged", and the note says why.
    assert runner.CONVERGED_STEPS is None
    default = bench.BenchConfig()
    assert not default.converged() and "not converged (no budget up to 8000 x 128" in bench.budget_note(default)
    # Once a converged budget is known, budgets at or above it are converged, budgets below it are not.
    monkeypatch.setattr(runner, "CONVERGED_STEPS", 4000)
    assert bench.BenchConfig(steps=4000).converged() and "not converged" not in bench.budget_note(
        bench.BenchConfig(steps=4000))
    short = bench.BenchConfig(steps=2000)
    assert not short.converged() and "below the measured converged budget of 4000" in bench.budget_note(short)
    # The budget is in samples: half the steps at twice the batch is the same budget.
    assert bench.BenchConfig(steps=2000, batch_size=256).converged()


def test_docstring_examples_hold() -> None:
    from scripts.bench import bench_fmnist_sweep

    for module in (bench, bench_fmnist_sweep):
        assert doctest.testmod(module).failed == 0


def test_converged_budget_is_the_smallest_whose_doubling_moves_accuracy_less_than_a_point() -> None:
    from scripts.bench.bench_fmnist_sweep import converged_budget

    budgets = [250, 500, 1000, 2000, 4000]
    assert converged_budget(budgets, [40.0, 60.0, 70.0, 70.9, 71.5]) == 1000
    assert converged_budget(budgets, [40.0, 60.0, 70.0, 71.0, 71.5]) == 2000  # exactly 1 point: not < 1
    assert converged_budget(budgets, [40.0, 60.0, 70.0, 69.5, 72.0]) == 1000  # a drop counts by its size
    assert converged_budget(budgets, [40.0, 50.0, 60.0, 70.0, 80.0]) is None
    assert converged_budget([500, 1000, 4000], [60.0, 60.5, 61.0]) == 500  # needs the doubled budget measured


def test_sweep_quick_writes_table_plot_and_converged_budget(tmp_path: Path) -> None:
    from scripts.bench import bench_fmnist_sweep

    data_dir = fake_fashion_mnist(tmp_path / "fm", train_per_class=60, test_per_class=10)
    work = tmp_path / "sweep"
    assert bench_fmnist_sweep.main(["budget", "--quick", "--budgets", "1", "2", "--data-dir", str(data_dir),
                                    "--work", str(work)]) == 0
    results = json.loads((work / "budget.json").read_text())
    assert [(p["model"], p["steps"]) for p in results["summary"]] == [(DEFAULT_MODEL, 1), (DEFAULT_MODEL, 2)]
    assert len(results["runs"]) == 4 and {r["row"] for r in results["runs"]} == {"ce", "balancemix"}
    expected = bench_fmnist_sweep.converged_budget([1, 2], [p["ce"]["overall"] for p in results["summary"]])
    assert results["converged_steps"] == expected
    assert (work / "budget.png").stat().st_size > 1000
    assert (work / "budget.md").read_text().count("| " + DEFAULT_MODEL) == 2


def _fake_run(job: Job) -> dict[str, Any]:
    """Stands in for a training run in a spawned worker: waits (up to 30 s) until two processes have
    checked in under the job's folder, so a pool that runs one job at a time fails instead of passing."""
    folder = job.out.parent
    (folder / f"{os.getpid()}.pid").touch()
    deadline = time.monotonic() + 30
    while len(list(folder.glob("*.pid"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    return {"row": job.row.key, "seed": job.seed, "pid": os.getpid()}


def test_parallel_jobs_run_in_separate_processes_and_keep_their_order(tmp_path: Path) -> None:
    row = bench.ROWS[0]
    jobs = [Job(row, seed, tmp_path / str(seed), (), cost=float(cost)) for seed, cost in enumerate([1, 5, 3, 9])]
    results = runner.run_jobs(jobs, parallel=2, runner=_fake_run)
    assert [r["seed"] for r in results] == [0, 1, 2, 3]  # the order of the jobs, not of completion
    assert len({r["pid"] for r in results}) == 2 and os.getpid() not in {r["pid"] for r in results}
    assert runner.longest_first(jobs) == [3, 1, 2, 0]  # submitted by decreasing cost
    (tmp_path / "other.pid").touch()  # in-process, one at a time: no waiting for a second process
    assert [r["pid"] for r in runner.run_jobs(jobs[:2], parallel=1, runner=_fake_run)] == [os.getpid()] * 2


def test_verdict_needs_every_comparison_above_one_std_and_two_seeds() -> None:
    def entry(row: str, seeds: int, overall: tuple[float, float], few: tuple[float, float]) -> dict[str, Any]:
        return {"row": row, "seeds": seeds, "overall": {"mean": overall[0], "std": overall[1]},
                "few": {"mean": few[0], "std": few[1]}}

    table = [entry("balancemix_la", 3, (80.0, 0.5), (75.0, 1.0)), entry("balancemix", 3, (78.0, 1.0), (73.0, 1.5)),
             entry("logit_adjust", 3, (74.0, 1.0), (60.0, 4.0))]
    v = bench.verdict(table)
    assert v is not None and v["beats_all"] is True
    assert [(c["rival"], c["group"], c["delta"], c["std"]) for c in v["comparisons"]] == [
        ("balancemix", "overall", 2.0, 1.0), ("balancemix", "few", 2.0, 1.5),
        ("logit_adjust", "overall", 6.0, 1.0), ("logit_adjust", "few", 15.0, 4.0)]
    table[1] = entry("balancemix", 3, (78.0, 1.0), (73.0, 2.5))  # few: +2.0 within the larger std 2.5
    v = bench.verdict(table)
    assert v is not None and v["beats_all"] is False
    assert "balancemix on few: +2.00 points (larger std 2.50): NOT better" in bench.format_verdict(v)
    assert bench.format_verdict(v).endswith("by more than one std: no")
    table[2] = entry("logit_adjust", 1, (74.0, 0.0), (60.0, 0.0))
    assert bench.verdict(table) is None and bench.verdict(table[:2]) is None
