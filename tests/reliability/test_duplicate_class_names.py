"""A class-names file that names a class twice (issue 12 §5) is refused by the one shared reader, so by every
entry point that reads one: ``file:line: duplicate class name 'x' (first at line n)``, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.run import main as agent_main
from scripts.lt import inspect_split
from tests.agent.run_helpers import agent_argv, make_dataset
from tests.trainer.trainer_helpers import make_tiny_data, train_argv
from trainer.train import main as train_main

DUPLICATE = "duplicate class name 'red fox' (first at line 2)"


def names_file(path: Path) -> Path:
    path.write_text("# classes\nred fox\nsnow owl\n\nred fox\n", encoding="utf-8")  # line 5 repeats line 2
    return path


def error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_agent_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_dataset(tmp_path / "data", {"red fox": 1, "snow owl": 1})
    names = names_file(tmp_path / "names.txt")
    out = tmp_path / "run"
    assert agent_main(agent_argv(data, out, "http://127.0.0.1:9/v1", "--class-names", str(names))) == 2
    line = error_line(capsys.readouterr().err)
    assert line.startswith("error: ") and f"{names}:5: {DUPLICATE}" in line
    assert not out.exists()


def test_trainer_train(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_tiny_data(tmp_path / "data")
    names = names_file(tmp_path / "names.txt")
    argv = train_argv(data, tmp_path / "out")
    argv[argv.index("--class-names") + 1] = str(names)
    assert train_main(argv) == 2
    assert error_line(capsys.readouterr().err).startswith(f"error: {names}:5: {DUPLICATE}; ")
    assert not (tmp_path / "out").exists()


def test_lt_tools_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = names_file(tmp_path / "names.txt")
    (tmp_path / "train.txt").write_text("a.png 0\nb.png 1\n", encoding="utf-8")
    assert inspect_split.main(["--list", str(tmp_path / "train.txt"), "--class-names", str(names)]) == 2
    assert error_line(capsys.readouterr().err).startswith(f"inspect: error: {names}:5: {DUPLICATE}; ")
