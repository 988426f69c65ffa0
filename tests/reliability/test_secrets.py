"""Secrets and deserialisation: the API key never reaches the run folder; checkpoints load in LangGraph's
strict msgpack mode with nothing blocked; traces hold image hashes, never image bytes."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.serde.event_hooks import register_serde_event_listener
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from agent.checkpoints import strict_serializer
from agent.run import main
from scripts.simulator import SimConfig, Simulator
from tests.agent.run_helpers import agent_argv, make_dataset
from tests.reliability.helpers import files_under, strict_load, traces

CLASSES = {"red fox": 1, "snow owl": 2, "sea turtle": 1}


@dataclass
class Planted:
    """A type outside LangGraph's safe list: what a tampered checkpoint would ask to construct."""

    command: str


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str, str]:
    """One run whose server demands a key, with a unique key value: (data, run folder, key, output)."""
    tmp = tmp_path_factory.mktemp("secrets")
    data = make_dataset(tmp / "data", CLASSES)
    key = f"sk-ltgc-{uuid.uuid4().hex}"
    mp = pytest.MonkeyPatch()
    mp.setenv("OPENAI_API_KEY", key)
    try:
        with Simulator(SimConfig(seed=0, require_key=True)) as sim:
            # K = 4 and a threshold no cosine reaches: render, evaluate and refine all run and checkpoint.
            argv = agent_argv(data, tmp / "run", sim.base_url, "--max-rounds", "1", k=4)
            argv[argv.index("--threshold") + 1] = "1"
            code = main(argv)
            assert sim.stats()["total"] > 0
    finally:
        mp.undo()
    assert code in (0, 1)
    return data, tmp / "run", key, str(code)


def test_no_file_of_the_run_folder_holds_the_api_key(finished_run):
    _, out, key, _ = finished_run
    needles = [key.encode(), key.encode("utf-16-le"), base64.b64encode(key.encode())]
    files = files_under(out)
    assert any(p.name == "traces.sqlite" for p in files) and any(p.name == "config.json" for p in files)
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"{path} holds the API key"
    assert "OPENAI_API_KEY" in (out / "config.json").read_text(encoding="utf-8")  # the name, never the value


def test_checkpoints_load_in_strict_msgpack_mode_with_nothing_blocked(finished_run):
    """A finished class keeps its last checkpoint only; test_crash_resume checks a stopped run's history."""
    _, out, _, _ = finished_run
    loaded = strict_load(out / "checkpoints.sqlite")
    finals = [values for _, values, _ in loaded if values.get("done")]
    assert len(finals) == len(CLASSES)
    assert all(v["items"] and all(i["scores"] for i in v["items"]) for v in finals)  # evaluated state revived


def test_strict_mode_really_blocks_an_unlisted_type():
    """Control for the test above: strict mode turns a type outside LangGraph's safe list into raw data."""
    events: list[dict[str, Any]] = []
    unregister = register_serde_event_listener(lambda e: events.append(dict(e)))
    try:
        typed = JsonPlusSerializer(allowed_msgpack_modules=True).dumps_typed({"x": Planted("rm -rf ~")})
        value = strict_serializer().loads_typed(typed)
    finally:
        unregister()
    assert not isinstance(value["x"], Planted) and value["x"] == {"command": "rm -rf ~"}
    assert any(e["kind"] == "msgpack_blocked" and e["name"] == "Planted" for e in events)


def test_traces_hold_image_hashes_never_image_bytes(finished_run):
    data, out, _, _ = finished_run
    rows = traces(out)
    inputs = {hashlib.sha256(p.read_bytes()).hexdigest(): p.read_bytes() for p in (data / "images").rglob("*.png")}
    outputs = [p.read_bytes() for p in (out / "blobs").rglob("*") if p.is_file()]
    assert outputs, "the run generated no image"
    described = 0
    for row in rows:
        request = json.loads(row["request"])
        text = row["request"] + (row["response_text"] or "")
        assert "data:image" not in text and ";base64," not in text, row["call_id"]
        if row["node"] == "describe":
            parts = request["messages"][0]["content"]
            hashes = [p["image_url"]["sha256"] for p in parts if p["type"] == "image_url"]
            assert hashes and all(h in inputs for h in hashes)  # the very bytes sent, by hash
            described += 1
    assert described >= sum(CLASSES.values())
    raw = (out / "traces.sqlite").read_bytes()
    for blob in [*inputs.values(), *outputs]:
        middle = blob[len(blob) // 2:][:48]  # pixel data: unique to the image, unlike the PNG header
        assert middle not in raw and base64.b64encode(blob)[:64] not in raw
