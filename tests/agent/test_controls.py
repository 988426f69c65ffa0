"""Control flags: validation (one line, exit 2), log routing in --log-json mode."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from agent.lifecycle.controls import RunControls, add_control_arguments, controls_from_args, log_function
from agent.readout.cost import load_prices
from agent.readout.progress import Progress
from store.errors import UsageError


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_control_arguments(parser)
    return parser.parse_args(list(argv))


def test_flags_become_controls() -> None:
    controls = controls_from_args(_args("--max-cost", "2.5", "--max-calls", "40", "--log-json"))
    assert (controls.max_cost_usd, controls.max_calls, controls.mode, controls.dry_run) == (2.5, 40, "log_json", False)
    assert controls_from_args(_args("--quiet", "--dry-run")).mode == "quiet"
    assert controls_from_args(_args()).mode == "live"


@pytest.mark.parametrize("argv", [("--max-cost", "-1"), ("--max-calls", "0"), ("--prices", "/nonexistent.toml")])
def test_bad_flags_are_one_line(argv: tuple[str, ...]) -> None:
    with pytest.raises(UsageError) as info:  # the one base: "error: <line>", exit 2 (store/errors.py)
        controls_from_args(_args(*argv))
    assert "\n" not in str(info.value) and argv[0] in str(info.value)


def test_log_json_routes_driver_lines_into_json_events(tmp_path: Path) -> None:
    printed: list[str] = []
    default = printed.append
    assert log_function(None, default) is default
    stream = io.StringIO()
    controls = RunControls(prices=load_prices(), mode="log_json")
    controls.progress = Progress(mode="log_json", stream=stream)
    log = log_function(controls, default)
    log("[fox] complete")
    assert printed == []
    event = json.loads(stream.getvalue())
    assert event["event"] == "log" and event["message"] == "[fox] complete"
