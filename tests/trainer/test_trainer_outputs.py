"""Where the trainer writes (issue 12 §6, issue 16 "Trainer outputs"): a bad ``--out`` and a full disk are one
line, nothing is left half-written, ``--resume`` works once space is back; eval says where its results went."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.trainer.trainer_helpers import TinyData, make_tiny_data, train_argv
from trainer import eval as trainer_eval
from trainer.train import main

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
# What torch.save raised on a full tmpfs (torch 2.14): its C++ writer reports the failed write this way.
TORCH_FULL_DISK = "[enforce fail at inline_container.cc:672] . unexpected pos 102528 vs 102420"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[TinyData, Path]:
    """One finished tiny run (1 epoch, --many 10 --few 4) that the eval tests read and never change."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = tmp_path_factory.mktemp("trained")
    data = make_tiny_data(root / "data")
    assert main(train_argv(data, root / "run")) == 0
    return data, root / "run"


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error:") or "Traceback" in ln]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_out_that_is_a_file_is_one_line_and_nothing_is_written(tiny_data: TinyData, tmp_path: Path, capsys,
                                                               trained) -> None:
    blocker = tmp_path / "results.txt"
    blocker.write_text("keep me")
    assert main(train_argv(tiny_data, blocker)) == 2
    assert capsys.readouterr().err.strip() == f"error: --out {blocker}: is a file, not a folder; choose another --out"
    assert main(train_argv(tiny_data, blocker / "run")) == 2
    assert capsys.readouterr().err.strip() == (f"error: --out {blocker / 'run'}: {blocker} is a file, so the folder "
                                               f"cannot be created; choose another --out")
    data, run = trained
    assert trainer_eval.main(["--checkpoint", str(run), "--test", str(data.test), "--out", str(blocker),
                              "--workers", "0"]) == 2
    assert capsys.readouterr().err.strip() == f"error: --out {blocker}: is a file, not a folder; choose another --out"
    assert blocker.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["data", "results.txt"]


def test_an_unwritable_out_is_one_line(tiny_data: TinyData, tmp_path: Path, capsys, monkeypatch) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != locked and real_access(p, mode, **kw))
    assert main(train_argv(tiny_data, locked / "run")) == 2  # root ignores modes: the check is what is tested
    assert capsys.readouterr().err.strip() == (f"error: --out {locked / 'run'}: the folder {locked} is not writable; "
                                               f"choose another --out or fix its permissions")
    monkeypatch.undo()
    real_mkdir = Path.mkdir

    def refuse(self: Path, *args, **kwargs) -> None:  # where the OS would refuse, past the early check
        if self == locked / "run":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    assert main(train_argv(tiny_data, locked / "run")) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"error: cannot write {locked / 'run' / 'config.json'}: Permission denied (")
    assert line.endswith("free on that disk); nothing was trained; free space or choose another --out")
    assert list(locked.iterdir()) == []


def _fail_second_checkpoint(monkeypatch: pytest.MonkeyPatch, writer: str) -> None:
    """The second checkpoint's write fails as each writer fails on a full disk (measured on a small tmpfs):
    torch.save leaves half a file and raises RuntimeError; peft's adapter save raises safetensors' error."""
    calls: list[str] = []

    def failing(real, name: str, error: Exception):  # type: ignore[no-untyped-def]
        def write(obj, f, *args, **kwargs):  # type: ignore[no-untyped-def]
            if str(f).endswith(name):
                calls.append(str(f))
                if len(calls) == 2:
                    Path(f).write_bytes(b"PK\x03\x04 half a file")
                    raise error
            return real(obj, f, *args, **kwargs)
        return write

    if writer == "torch.save":
        monkeypatch.setattr(torch, "save", failing(torch.save, "last.tmp/state.pt", RuntimeError(TORCH_FULL_DISK)))
    else:
        import peft.peft_model
        from safetensors import SafetensorError

        full = SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        monkeypatch.setattr(peft.peft_model, "safe_save_file",
                            failing(peft.peft_model.safe_save_file, "adapter_model.safetensors", full))


@pytest.mark.parametrize(("writer", "reason"), [("torch.save", "the write failed"),
                                                ("safetensors", "No space left on device")])
def test_a_full_disk_mid_run_keeps_the_last_checkpoint_and_resume_finishes(tiny_data: TinyData, tmp_path: Path,
                                                                           capsys, monkeypatch, writer: str,
                                                                           reason: str) -> None:
    common = ["--generated", str(tiny_data.generated), "--mode", "balancemix", "--epochs", "2", "--lr", "0.01"]
    out = tmp_path / "run"
    _fail_second_checkpoint(monkeypatch, writer)
    assert main(train_argv(tiny_data, out, *common)) == 1
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"error: cannot write {out / 'checkpoints' / 'last'}: {reason} (")
    assert line.endswith("checkpoints/last still holds epoch 1: free space and continue with --resume")
    last = out / "checkpoints" / "last"
    assert torch.load(last / "state.pt", weights_only=False)["epoch"] == 1  # the old checkpoint, whole
    assert not (out / "checkpoints" / "last.tmp").exists() and not (out / "metrics.json").exists()
    assert [json.loads(r)["epoch"] for r in (out / "train_log.jsonl").read_text().splitlines()] == [1]
    monkeypatch.undo()  # space is back
    assert main(train_argv(tiny_data, out, *common, "--resume")) == 0
    assert [json.loads(r)["epoch"] for r in (out / "train_log.jsonl").read_text().splitlines()] == [1, 2]
    straight = tmp_path / "straight"
    assert main(train_argv(tiny_data, straight, *common)) == 0
    a, b = (torch.load(d / "checkpoints" / "last" / "trainable.pt") for d in (out, straight))
    assert all(torch.allclose(a[n], b[n], atol=1e-6, rtol=0) for n in a)
    assert json.loads((out / "metrics.json").read_text())["overall"] == \
        json.loads((straight / "metrics.json").read_text())["overall"]


def test_a_full_disk_at_the_reports_is_resumable(tiny_data: TinyData, tmp_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "run"

    def full(path: Path, text: str) -> None:
        raise ENOSPC

    monkeypatch.setattr("trainer.metrics.atomic_write_text", full)
    assert main(train_argv(tiny_data, out)) == 1
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"error: cannot write {out}: No space left on device (")
    assert line.endswith(f"the trained model is in {out / 'checkpoints' / 'last'}: free space and run the same "
                         f"command with --resume to write the reports")
    assert not (out / "metrics.json").exists()
    monkeypatch.undo()
    assert main(train_argv(tiny_data, out, "--resume")) == 0
    assert json.loads((out / "metrics.json").read_text())["test_images"] == 12


def test_eval_says_where_results_went_and_uses_the_runs_thresholds(trained, tmp_path: Path, capsys,
                                                                   monkeypatch) -> None:
    data, run = trained
    assert trainer_eval.main(["--checkpoint", str(run), "--test", str(data.test), "--workers", "0"]) == 0
    where = run / "eval" / "test"  # not inside checkpoints/last, which the next --resume replaces
    err = capsys.readouterr().err
    assert f"[eval] wrote metrics.json, per_class.csv and acc_vs_count.png to {where}" in err
    metrics = json.loads((where / "metrics.json").read_text())
    assert metrics["thresholds"] == {"many": 10, "few": 4}  # the training run's --many/--few
    assert metrics["skipped_images"] == {"test": 0} and metrics["test"] == str(data.test)
    assert not (run / "checkpoints" / "last" / "eval").exists()
    before = (where / "metrics.json").read_bytes()
    monkeypatch.setattr("trainer.metrics.atomic_write_text", lambda p, t: (_ for _ in ()).throw(ENOSPC))
    assert trainer_eval.main(["--checkpoint", str(run), "--test", str(data.test), "--workers", "0", "--many",
                              "3"]) == 1
    assert one_line(capsys.readouterr().err).endswith("the checkpoint is untouched: free space or pass another --out")
    assert (where / "metrics.json").read_bytes() == before


def test_eval_help_matches_behaviour() -> None:
    text = " ".join(trainer_eval.build_parser().format_help().split())
    assert "'many' (default: the training run's value)" in text and "'few' (default: the training run's value)" in text
    assert "default 100" not in text and "RUN/eval/<test name>" in text


def test_skipped_images_are_counted_in_eval_metrics(trained, tmp_path: Path) -> None:
    data, run = trained
    test = tmp_path / "test.txt"
    test.write_text(data.test.read_text() + "img/broken.png 1\n")
    (data.root / "img" / "broken.png").write_bytes(b"not a png")
    try:
        assert trainer_eval.main(["--checkpoint", str(run), "--test", str(test), "--data-root", str(data.root),
                                  "--workers", "0", "--skip-bad-images", "--out", str(tmp_path / "ev")]) == 0
    finally:
        (data.root / "img" / "broken.png").unlink()
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["skipped_images"] == {"test": 1} and metrics["test_images"] == 12


def test_accuracy_plot_has_ticks_labelled_bounds_and_a_title() -> None:
    from trainer.metrics import accuracy_figure

    fig = accuracy_figure([3, 2, 1], [4, 4, 4], [12, 6, 2], many=10, few=4)
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert len(ticks) >= 3, ticks  # 1-2-5 ticks, not the single "10" of a bare log axis
    assert lo < 4 and hi > 12  # both bounds inside the plot
    assert {t.get_text() for t in ax.texts} == {"few: < 4", "many: > 10"}
    assert "accuracy" in ax.get_title() and "overall 50.0%" in ax.get_title()


def test_cli_catches_every_usage_error_once(capsys) -> None:
    from scripts.lt.profile import ProfileError
    from scripts.lt.sources import SourceError
    from store.errors import UsageError
    from store.lists import ListFileError
    from store.manifest import ManifestError
    from trainer import cli
    from trainer.model import ModelError
    from trainer.outputs import OutputError
    from trainer.samples import DataError

    for kind in (DataError, ModelError, ManifestError, ListFileError, SourceError, ProfileError, OutputError):
        assert issubclass(kind, UsageError), kind

    def body(args) -> int:  # type: ignore[no-untyped-def]
        raise OutputError("cannot write x: disk full; free space", exit_code=1)

    assert cli.run_main(cli.Parser(prog="t"), [], body) == 1
    assert capsys.readouterr().err == "error: cannot write x: disk full; free space\n"


def test_a_corrupt_image_in_a_worker_process_is_one_line(tiny_data: TinyData, tmp_path: Path, capsys) -> None:
    (tiny_data.root / "img" / "train" / "0_3.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert main(train_argv(tiny_data, tmp_path / "run", "--workers", "1", "--cache-mb", "0")) == 2
    line = one_line(capsys.readouterr().err)  # raised in the worker, re-raised by the DataLoader with a traceback
    assert line.startswith(f"error: {tiny_data.train}:4: cannot read image {tiny_data.root / 'img/train/0_3.png'}: ")
    assert line.endswith(" (replace the file, or pass --skip-bad-images)") and "Caught" not in line


def test_no_raw_library_warnings_and_eval_says_the_weights_are_loaded(tiny_data: TinyData, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "HF_HUB_OFFLINE": "1"}
    run = tmp_path / "run"
    train = subprocess.run([sys.executable, "-m", "trainer.train", *train_argv(tiny_data, run)], env=env,
                           capture_output=True, text=True, timeout=240)
    assert train.returncode == 0, train.stderr
    assert "WARNING:" not in train.stderr and "No pretrained weights loaded" not in train.stderr
    assert train.stderr.count("--pretrained none: the backbone starts from random weights (seed 0)") == 1
    ev = subprocess.run([sys.executable, "-m", "trainer.eval", "--checkpoint", str(run), "--test",
                         str(tiny_data.test), "--workers", "0"], env=env, capture_output=True, text=True, timeout=240)
    assert ev.returncode == 0, ev.stderr
    assert "WARNING:" not in ev.stderr and "initialized randomly" not in ev.stderr
    assert (f"[eval] model ltgc-tiny-vit: base random weights from seed 0, as in training (--pretrained none), with "
            f"the trained parameters of {run / 'checkpoints' / 'last' / 'trainable.pt'} loaded on top") in ev.stderr
    assert f"to {run / 'eval' / 'test'}" in ev.stderr
