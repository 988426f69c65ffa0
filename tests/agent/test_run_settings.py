"""Run settings: CLI > [run] TOML > the saved run on --resume > defaults; one-line errors; resume by folder."""

from __future__ import annotations

import json

import pytest

from agent.lifecycle.settings import DEFAULT_THRESHOLDS, SettingsError, resolve
from agent.run import main
from scripts.sim.server import SimConfig, Simulator
from store.manifest import read_manifest
from tests.agent.run_helpers import agent_argv, make_dataset


def test_layers_and_defaults(tmp_path):
    base = {"out": str(tmp_path / "o"), "classes": str(tmp_path / "t.txt")}
    s = resolve({**base, "target_per_class": "7"}, {"target_per_class": 9, "max_rounds": 1},
                {"max_rounds": 5, "max_describe": 3, "run_id": "old"})
    assert (s.target_per_class, s.max_rounds, s.max_describe, s.run_id) == (7, 1, 3, "old")
    assert s.threshold == DEFAULT_THRESHOLDS["cosine"] and s.out.is_absolute()
    assert resolve({**base, "score": "softmax"}, {}).threshold == DEFAULT_THRESHOLDS["softmax"]
    assert resolve(base, {}).run_id != resolve(base, {}).run_id  # fresh runs get fresh ids


@pytest.mark.parametrize(("cli", "toml", "message"), [
    ({"target_per_class": "0"}, {}, "--target-per-class: must be an integer >= 1, got '0'"),
    ({}, {"max_rounds": "x"}, "[run] max_rounds: must be an integer >= 0"),
    ({}, {"colour": 1}, "[run] colour: unknown setting"),
    ({"score": "dot"}, {}, "--score: must be one of cosine, softmax"),
    ({"run_id": "a/b"}, {}, "must be a non-empty id without '/'"),
])
def test_bad_settings_name_the_setting_and_its_source(tmp_path, cli, toml, message):
    base = {"out": str(tmp_path / "o"), "classes": str(tmp_path / "t.txt")}
    with pytest.raises(SettingsError) as info:
        resolve({**base, **cli}, toml)
    assert message in str(info.value)


def test_run_table_in_config_file_and_resume_with_only_the_folder(tmp_path):
    data = make_dataset(tmp_path / "data", {"red fox": 1, "snow owl": 2})
    out = tmp_path / "run"
    with Simulator(SimConfig(seed=0)) as sim:
        argv = agent_argv(data, out, sim.base_url, k=4)
        i = argv.index("--target-per-class")
        del argv[i:i + 2]  # K comes from the TOML file instead
        config = tmp_path / "run.toml"
        config.write_text("[run]\ntarget_per_class = 3\n", encoding="utf-8")
        assert main([*argv, "--config", str(config)]) == 0
        saved = json.loads((out / "config.json").read_text())
        assert saved["run"]["target_per_class"] == 3 and saved["providers"]["llm"]["base_url"] == sim.base_url
        assert len(read_manifest(out / "manifest.jsonl")) == (3 - 1) + (3 - 2)
        sim.reset_stats()
        assert main(["--out", str(out), "--resume"]) == 0  # everything else from the saved config
        assert sim.stats()["total"] == 0  # both classes were complete: skipped
    assert "sk-" not in (out / "config.json").read_text()
