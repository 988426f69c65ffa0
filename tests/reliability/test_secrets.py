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

from agent.lifecycle.checkpoints import UnsafeCheckpointError, strict_serializer
from agent.run import main
from scripts.sim.server import SimConfig, Simulator
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
    """Control for the test above: a type outside LangGraph's safe list is never constructed; ours refuses
    the whole value with one line instead of handing back its raw data."""
    events: list[dict[str, Any]] = []
    unregister = register_serde_event_listener(lambda e: events.append(dict(e)))
    built: list[Planted] = []
    try:
        typed = JsonPlusSerializer(allowed_msgpack_modules=True).dumps_typed({"x": Planted("rm -rf ~")})
        with pytest.raises(UnsafeCheckpointError, match="test_secrets.Planted") as info:
            built.append(strict_serializer().loads_typed(typed))
    finally:
        unregister()
    assert not built and "\n" not in str(info.value)
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


def _mkdir_payload(marker: Path) -> bytes:
    """msgpack naming ``os.mkdir(marker)``: LangGraph's default serializer imports ``os`` and calls it."""
    import ormsgpack
    from langgraph.checkpoint.serde.jsonplus import EXT_CONSTRUCTOR_SINGLE_ARG

    return ormsgpack.packb(ormsgpack.Ext(EXT_CONSTRUCTOR_SINGLE_ARG, ormsgpack.packb(["os", "mkdir", str(marker)])))


def _plant(checkpoints: Path, payload: bytes) -> None:
    """Add ``payload`` as a pending write of the latest checkpoint of one class thread."""
    import sqlite3

    conn = sqlite3.connect(checkpoints)
    try:
        thread, ns, checkpoint_id = conn.execute(
            "SELECT thread_id, checkpoint_ns, MAX(checkpoint_id) FROM checkpoints GROUP BY thread_id LIMIT 1").fetchone()
        conn.execute("INSERT INTO writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, value) "
                     "VALUES (?, ?, ?, 'planted', 0, 'warnings', 'msgpack', ?)", (thread, ns, checkpoint_id, payload))
        conn.commit()
    finally:
        conn.close()


def test_a_tampered_checkpoint_runs_nothing_on_resume_status_or_report(finished_run, tmp_path):
    """A checkpoint that names a callable with a visible side effect (``os.mkdir``): ``--resume``,
    ``agent.traces RUN status`` and ``agent.report`` each refuse it with one line; nothing is called."""
    import shutil
    import subprocess
    import sys

    from tests.reliability.helpers import REPO, agent_env

    _, out, _, _ = finished_run
    run = tmp_path / "copied-run"
    shutil.copytree(out, run)
    marker = tmp_path / "PLANTED-MKDIR-RAN"
    _plant(run / "checkpoints.sqlite", _mkdir_payload(marker))
    # Control: such a payload is live — LangGraph's default (permissive) serializer runs it.
    control = tmp_path / "control-ran"
    JsonPlusSerializer(allowed_msgpack_modules=True).loads_typed(("msgpack", _mkdir_payload(control)))
    assert control.is_dir()
    before = (run / "manifest.jsonl").read_bytes()
    with Simulator(SimConfig(seed=0)) as sim:  # the server moved (a "how" setting a resume may change)
        urls = [arg for role in ("lmm", "llm", "t2i") for arg in (f"--{role}-base-url", sim.base_url)]
        commands = (["-m", "agent.run", "--out", str(run), "--resume", *urls], ["-m", "agent.traces", str(run), "status"],
                    ["-m", "agent.report", str(run)])
        results = [subprocess.run([sys.executable, *argv], cwd=REPO, env=agent_env(), capture_output=True, text=True,
                                  timeout=120) for argv in commands]
        assert sim.stats()["total"] == 0
    for argv, done in zip(commands, results, strict=True):
        errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        assert done.returncode == 2, (argv, done.stderr)
        assert len(errors) == 1 and "os.mkdir" in errors[0] and "nothing was imported or called" in errors[0], \
            (argv, done.stderr)
        assert "Blocked deserialization" not in done.stderr, done.stderr  # said once, in our words
        assert "Traceback" not in done.stderr and not marker.exists(), argv
    assert (run / "manifest.jsonl").read_bytes() == before  # the refused resume changed nothing
