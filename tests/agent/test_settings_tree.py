"""The one settings tree (agent/lifecycle/settings.py): the dry-run plan assumes what the graph runs with,
errors stay one line whatever pydantic says, ``[run] max_cost`` / ``max_calls`` work from a TOML file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent.lifecycle.controls import plan_for
from agent.lifecycle.settings import NOT_SAVED, SAVED, GraphSettings, RunSettings, SettingsError, resolve
from agent.providers.config import load_providers_config
from agent.readout.cost import load_prices
from agent.readout.plan import plan_json
from agent.run import main as run_main
from scripts.sim.server import SimConfig, Simulator
from tests.agent.run_helpers import make_dataset
from tests.reliability.helpers import REPO, agent_env


def _base(tmp_path: Path) -> dict[str, str]:
    return {"out": str(tmp_path / "o"), "classes": str(tmp_path / "t.txt")}


@pytest.mark.parametrize("cli", [{}, {"max_extend_rounds": "7", "max_rounds": "1", "max_describe": "2",
                                      "target_per_class": "9"}])
def test_the_dry_run_plans_with_the_graphs_settings(tmp_path: Path, cli: dict[str, str]) -> None:
    settings = resolve({**_base(tmp_path), **cli}, {})
    graph = settings.graph_settings()  # what agent/lifecycle/driver.py hands the class graph (GraphDeps.settings)
    inputs = SimpleNamespace(classes=[SimpleNamespace(name="fox", images=["a.png"])])
    plan = plan_for(settings, load_providers_config(None, {}, {}), inputs, load_prices())
    assert plan.settings == graph
    assert plan_json(plan)["settings"] == {"k": graph.target_per_class, "max_rounds": graph.max_rounds,
                                           "max_describe": graph.max_describe,
                                           "max_extend_rounds": graph.max_extend_rounds,
                                           "max_dedupe_passes": graph.max_dedupe_passes}
    if not cli:  # the graph's own defaults are the run's: 50 extend rounds per pass (the planner once assumed 10)
        assert GraphSettings() == graph and graph.max_extend_rounds == 50


def test_config_json_keeps_its_keys_and_never_saves_the_caps(tmp_path: Path) -> None:
    assert set(SAVED) | NOT_SAVED == set(RunSettings.model_fields) and not set(SAVED) & NOT_SAVED
    settings = resolve(_base(tmp_path), {"max_cost": 2.5, "max_calls": 40})
    assert (settings.max_cost, settings.max_calls) == (2.5, 40)
    assert list(settings.to_json()) == list(SAVED) and "max_cost" not in settings.to_json()
    # A resume states its own caps: a saved one (from a hand-edited config.json) is not taken up.
    assert resolve(_base(tmp_path), {}, {"max_calls": 3}).max_calls is None


@pytest.mark.parametrize(("toml", "line"), [
    ({"max_describe": 0}, "r.toml [run] max_describe: must be an integer >= 1, got 0"),
    ({"max_calls": 1.5}, "r.toml [run] max_calls: must be an integer >= 1, got 1.5"),
    ({"max_cost": float("nan")}, "r.toml [run] max_cost: must be a number of US dollars > 0, got nan"),
    ({"include_originals": "yes"}, "r.toml [run] include_originals: must be true or false, got 'yes'"),
    ({"max_rounds": True}, "r.toml [run] max_rounds: must be an integer >= 0, got True"),
    ({"batch_poll_s": "inf"}, "r.toml [run] batch_poll_s: must be a number of seconds > 0, got 'inf'"),
    ({"images": ""}, "r.toml [run] images: must be a path, got ''"),
    ({"score": "softmax", "threshold": 1.5},
     "r.toml [run] threshold: must be from 0 to 1 with --score softmax (a probability), got 1.5"),
    ({"max_dedupe_passes": 2}, "r.toml [run] max_dedupe_passes: unknown setting"),
])
def test_errors_are_one_line_naming_setting_and_source(tmp_path: Path, toml: dict[str, object], line: str) -> None:
    with pytest.raises(SettingsError) as info:
        resolve(_base(tmp_path), toml, toml_label="r.toml [run]")
    text = str(info.value)
    assert text.startswith(line) and "\n" not in text and "pydantic" not in text, text


def test_a_saved_value_names_config_json(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^config.json max_rounds: must be an integer >= 0, got -1$"):
        resolve(_base(tmp_path), {}, {"max_rounds": -1})


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.run", *argv], cwd=REPO, env=agent_env(),
                          capture_output=True, text=True, timeout=300)


def test_run_table_caps_work_from_a_toml_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_dataset(tmp_path / "data", {"red fox": 1, "snow owl": 1})
    out = tmp_path / "run"
    with Simulator(SimConfig(seed=0)) as sim:
        roles = "".join(f'[{r}]\nbase_url = "{sim.base_url}"\nmodel = "sim-{r}"\nper_minute = 100000\n\n'
                        for r in ("lmm", "llm", "t2i"))
        config = tmp_path / "run.toml"
        config.write_text(
            f'[run]\nclasses = "data/tail.txt"\nimages = "data/images"\nout = "run"\nrun_id = "caps"\n'
            f'clip_model = "{data / "tiny-clip.json"}"\nclip_pretrained = "none"\ntarget_per_class = 4\nthreshold = -1\n'
            "max_calls = 5\n\n" + roles, encoding="utf-8")
        done = _run(["--config", str(config), "--quiet"])
        assert done.returncode == 3, done.stderr
        assert sim.stats()["total"] == 5  # the TOML cap is exact, like the flag
        assert any(line.startswith("budget reached") and "--max-calls" in line for line in done.stderr.splitlines())
        assert "max_calls" not in json.loads((out / "config.json").read_text())["run"]
        # A bad cap in the file: one line naming the file's key, exit 2, nothing sent (in process: no model loads).
        bad = config.read_text(encoding="utf-8").replace("max_calls = 5", "max_cost = -1")
        config.write_text(bad, encoding="utf-8")
        capsys.readouterr()
        code = run_main(["--config", str(config), "--quiet", "--out", str(tmp_path / "other")])
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and lines == [
            f"error: {config} [run] max_cost: must be a number of US dollars > 0, got -1"], lines
        assert sim.stats()["total"] == 5
