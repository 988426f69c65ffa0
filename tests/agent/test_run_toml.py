"""A `--config run.toml` the way a user writes one: relative paths are relative to the TOML file, errors name
the TOML setting (not a flag the user never typed), and config.json records which TOML was used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.run import main
from scripts.sim.server import SimConfig, Simulator
from tests.agent.run_helpers import make_dataset


def _toml(folder: Path, base_url: str, classes: str = "../data/tail.txt") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run.toml"
    roles = "".join(f'[{r}]\nbase_url = "{base_url}"\nmodel = "sim-{r}"\nper_minute = 100000\n\n'
                    for r in ("lmm", "llm", "t2i"))
    path.write_text(
        "[run]\n"
        f'classes = "{classes}"\nimages = "../data/images"\nout = "../runs/r1"\nrun_id = "toml"\n'
        'clip_model = "../data/tiny-clip.json"\nclip_pretrained = "none"\ntarget_per_class = 4\nthreshold = -1\n\n'
        + roles, encoding="utf-8")
    return path


def test_relative_paths_in_a_toml_are_relative_to_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    make_dataset(tmp_path / "data", {"red fox": 1, "snow owl": 1})
    elsewhere = tmp_path / "x" / "elsewhere"  # ../data from here does not exist: only conf/../data does
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)  # the shell is not where the TOML is
    with Simulator(SimConfig(seed=0)) as sim:
        config = _toml(tmp_path / "conf", sim.base_url)
        assert main(["--config", str(config), "--quiet"]) == 0, capsys.readouterr().err
    out = tmp_path / "runs" / "r1"  # ../runs/r1 from conf/, not from the working directory
    doc = json.loads((out / "config.json").read_text())
    assert doc["config_file"] == str(config.resolve())
    assert doc["run"]["classes"] == str((tmp_path / "data" / "tail.txt").resolve())
    assert doc["run"]["clip_model"] == str((tmp_path / "data" / "tiny-clip.json").resolve())  # a file, not a name
    assert not (tmp_path / "x" / "runs").exists()


def test_a_clip_model_that_does_not_load_is_named_as_the_toml_setting(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    make_dataset(tmp_path / "data", {"red fox": 1})
    with Simulator(SimConfig(seed=0)) as sim:
        config = _toml(tmp_path / "conf", sim.base_url)
        text = config.read_text().replace("../data/tiny-clip.json", "../data/missing-clip.json")
        config.write_text(text, encoding="utf-8")
        assert main(["--config", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {config} [run] clip_model"), err
    assert "--clip-model" not in err[0] and str((tmp_path / "data" / "missing-clip.json").resolve()) in err[0]


def test_an_error_names_the_toml_setting_not_a_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_dataset(tmp_path / "data", {"red fox": 1})
    config = _toml(tmp_path / "conf", "http://127.0.0.1:9/v1", classes="missing-tail.txt")
    assert main(["--config", str(config), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {config} [run] classes"), err
    assert "--classes" not in err[0]
