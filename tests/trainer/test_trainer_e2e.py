"""``trainer.train.main`` and ``trainer.eval.main`` end to end on tiny synthetic images and a tiny ViT."""

from __future__ import annotations

import csv
import json
import os
import socket
from pathlib import Path

import pytest
import torch

from tests.trainer.trainer_helpers import TinyData, train_argv
from trainer import eval as trainer_eval
from trainer.losses import sampler_prior
from trainer.train import main


def _trainable(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoints" / "last" / "trainable.pt")


@pytest.mark.parametrize("mode, extra", [
    ("plain", ["--loss", "logit-adjust", "--tune", "head", "--epochs", "1"]),
    ("balanced", ["--generated", "GEN", "--head", "random", "--epochs", "1"]),
    ("mixup", ["--generated", "GEN", "--tune", "full", "--alpha", "0.4", "--epochs", "1", "--amp"]),
    ("balancemix", ["--generated", "GEN", "--loss", "logit-adjust", "--la-tau", "0.5", "--eval-every", "1",
                    "--epochs", "2"]),
])
def test_main_trains_and_reports_in_every_mode(tiny_data: TinyData, tmp_path: Path, capsys, mode: str,
                                               extra: list[str]) -> None:
    out = tmp_path / mode
    extra = [str(tiny_data.generated) if e == "GEN" else e for e in extra]
    assert main(train_argv(tiny_data, out, "--mode", mode, *extra)) == 0
    assert ("--amp (bf16 autocast) is CUDA-only" in capsys.readouterr().err) == ("--amp" in extra)
    epochs = int(extra[extra.index("--epochs") + 1])
    config = json.loads((out / "config.json").read_text())
    n_gen = 12 if "--generated" in extra else 0
    assert config["mode"] == mode and config["generated_images"] == n_gen
    assert config["samples_per_epoch_resolved"] == 20 + n_gen  # default: |D_o| + |D_g|
    assert config["train_counts"] == [12, 6, 2]
    # Logit adjustment's prior is what this mode's sampler draws (trainer/losses.py derives it).
    prior = sampler_prior(mode, [12, 6, 2], [4, 4, 4] if n_gen else [0, 0, 0])
    assert config["la_prior_resolved"] == pytest.approx(prior, abs=1e-6)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_images"] == 12 and metrics["epochs"] == epochs and metrics["images_per_s"] > 0
    assert {g: metrics["splits"][g]["classes"] for g in ("many", "medium", "few")} == \
        {"many": 1, "medium": 1, "few": 1}
    for key in ("overall", "many", "medium", "few"):
        assert 0.0 <= metrics[key] <= 100.0
    rows = list(csv.DictReader((out / "per_class.csv").open()))
    assert [r["train_count"] for r in rows] == ["12", "6", "2"]
    assert (out / "acc_vs_count.png").stat().st_size > 1000
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, epochs + 1)) and all(r["images"] == 20 + n_gen for r in log)
    last = out / "checkpoints" / "last"
    assert {"trainable.pt", "state.pt", "model.json", "rng_rank0.pt"} <= {p.name for p in last.iterdir()}
    assert (last / "adapter" / "adapter_config.json").is_file() == ("--tune" not in extra)
    if mode == "balancemix":
        assert "overall" in log[0]  # --eval-every 1
        # trainer.eval on the saved checkpoint reproduces the training run's final metrics.
        assert trainer_eval.main(["--checkpoint", str(out), "--test", str(tiny_data.test), "--workers", "0",
                                  "--device", "cpu", "--out", str(tmp_path / "ev")]) == 0
        again = json.loads((tmp_path / "ev" / "metrics.json").read_text())
        assert again["overall"] == metrics["overall"] and again["few"] == metrics["few"]


def test_resume_gives_the_same_weights_as_a_straight_run(tiny_data: TinyData, tmp_path: Path) -> None:
    common = ["--generated", str(tiny_data.generated), "--mode", "balancemix", "--epochs", "2",
              "--lr", "0.01", "--max-test", "3"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(train_argv(tiny_data, straight, *common)) == 0
    assert main(train_argv(tiny_data, split, *common, "--stop-after-epoch", "1")) == 0
    after_one = _trainable(split)
    assert not (split / "metrics.json").exists()
    assert main(train_argv(tiny_data, split, *common, "--resume")) == 0
    a, b = _trainable(straight), _trainable(split)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6, rtol=0), name
    assert any(not torch.allclose(after_one[n], a[n], atol=1e-4) for n in a), "epoch 2 must change weights"
    rows = (split / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2]


@pytest.mark.parametrize("change, message", [
    (["--mode", "balancemix"], "--mode balancemix mixes with generated data: pass --generated"),
    (["--model", "ViT-Nope"], "unknown open_clip model 'ViT-Nope'"),
    (["--epochs", "zero"], "argument --epochs: expected an integer, got 'zero'"),
    (["--pretrained", "laion-nope"], "not a known tag"),
    (["--class-names", "/nonexistent/names.txt"], "/nonexistent/names.txt: no such file"),
])
def test_bad_input_is_one_line_and_exit_2(tiny_data: TinyData, tmp_path: Path, capsys, change, message) -> None:
    assert main(train_argv(tiny_data, tmp_path / "o", *change)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_bad_list_line_and_missing_image_name_the_file(tiny_data: TinyData, tmp_path: Path, capsys) -> None:
    lines = tiny_data.train.read_text().splitlines()
    broken = tiny_data.root / "broken.txt"
    broken.write_text("\n".join([*lines[:2], "img/train/0_2.png zero", *lines[3:]]) + "\n")
    argv = train_argv(tiny_data, tmp_path / "o")
    argv[argv.index(str(tiny_data.train))] = str(broken)
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == f"error: {broken}:3: label must be a non-negative integer, got 'zero'"
    (tiny_data.root / "img" / "train" / "1_0.png").unlink()
    assert main(train_argv(tiny_data, tmp_path / "o")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tiny_data.train}:13: image not found") and "\n" not in err
    assert main(train_argv(tiny_data, tmp_path / "o", "--skip-bad-images")) == 0
    assert "skipped 1 unreadable image" in capsys.readouterr().err
    assert json.loads((tmp_path / "o" / "config.json").read_text())["train_counts"] == [12, 5, 2]
    # A second run into the same folder must not silently overwrite it, and resume checks the options.
    assert main(train_argv(tiny_data, tmp_path / "o", "--skip-bad-images")) == 2
    assert "already holds a checkpoint" in capsys.readouterr().err
    assert main(train_argv(tiny_data, tmp_path / "o", "--skip-bad-images", "--resume", "--lr", "0.1")) == 2
    assert "--lr is 0.1 but the checkpoint's run used 0.0005" in capsys.readouterr().err


def _ddp_rank(rank: int, argv: list[str], port: int) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    if main(argv) != 0:
        raise SystemExit(1)


def test_two_process_ddp_run_on_cpu(tiny_data: TinyData, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp"
    argv = train_argv(tiny_data, out, "--generated", str(tiny_data.generated), "--samples-per-epoch", "21")
    # fork: the children inherit the imported torch/open_clip instead of paying ~10 s each to import them.
    torch.multiprocessing.start_processes(_ddp_rank, args=(argv, port), nprocs=2, join=True, start_method="fork")
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2 and config["samples_per_epoch_resolved"] == 22  # 21 padded to 2 x 11
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_images"] == 12  # both ranks' shares summed
    log = json.loads((out / "train_log.jsonl").read_text().splitlines()[0])
    assert log["images"] == 22
    assert {"rng_rank0.pt", "rng_rank1.pt"} <= {p.name for p in (out / "checkpoints" / "last").iterdir()}


def test_eval_rejects_a_folder_without_a_checkpoint(tiny_data: TinyData, tmp_path: Path, capsys) -> None:
    assert trainer_eval.main(["--checkpoint", str(tmp_path), "--test", str(tiny_data.test)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {tmp_path}: not a trainer checkpoint (expected model.json and trainable.pt, " \
                  f"e.g. OUT/checkpoints/last)"
