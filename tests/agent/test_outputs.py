"""agent/lifecycle/outputs.py: rows gathered class by class give the bytes write_manifest gives, in any
finishing order, with no class state kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.graph.finalize import generated_rows, rejected_rows
from agent.graph.state import ClassState, initial_state
from agent.lifecycle.folder import RunFolder
from agent.lifecycle.inputs import ClassSpec, Inputs
from agent.lifecycle.outputs import Outputs
from store.manifest import ManifestError, write_manifest
from store.slug import slugify


def _state(spec: ClassSpec, n_items: int) -> ClassState:
    state = initial_state(class_name=spec.name, label=spec.label, slug=slugify(spec.name), images=[], k_y=n_items)
    state["items"] = [
        {"index": i, "description": f"A photo of the class {spec.name}, view {i}.", "history": [],
         "history_images": [], "sha256": f"{spec.label:02d}{i:02d}".ljust(64, "a"), "ext": "png",
         "scores": [0.3], "round": 0, "status": "accepted" if i % 3 else "rejected", "error": None}
        for i in range(n_items)]
    state["done"], state["status"] = True, "complete"
    return state


def test_rows_match_write_manifest_whatever_the_finishing_order(tmp_path: Path) -> None:
    specs = tuple(ClassSpec(f"class {c}", label, ()) for c, label in enumerate([5, 1, 3]))
    inputs = Inputs(classes=specs, class_names={s.label: s.name for s in specs}, warnings=())
    states = {s.name: _state(s, 4) for s in specs}
    outputs = Outputs(inputs, "r1", include_originals=False)
    for spec in reversed(specs):  # finish in another order than the inputs'
        outputs.add(spec, states[spec.name])
    outputs.add(specs[0], states[specs[0].name])  # added twice: replaces, never duplicates
    (tmp_path / "out").mkdir()
    classes = outputs.write(RunFolder(tmp_path / "out"))
    outputs.close()
    write_manifest(tmp_path / "expected.jsonl", [r for s in specs for r in generated_rows(states[s.name], "r1")])
    assert (tmp_path / "out" / "manifest.jsonl").read_bytes() == (tmp_path / "expected.jsonl").read_bytes()
    rejected = [json.loads(line) for line in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert rejected == [r for s in specs for r in rejected_rows(states[s.name], "r1")]  # class order
    assert list(classes) == [s.name for s in specs] and classes["class 1"]["accepted"] == 2


def test_a_class_never_added_and_a_duplicate_path(tmp_path: Path) -> None:
    specs = (ClassSpec("a", 0, ()), ClassSpec("b", 1, ()))
    inputs = Inputs(classes=specs, class_names={0: "a", 1: "b"}, warnings=())
    outputs = Outputs(inputs, "r1", include_originals=False)
    outputs.add(specs[0], _state(specs[0], 2))
    classes = outputs.write(RunFolder(tmp_path))
    assert classes["b"] == {"label": 1, "slug": "b"}  # never started
    outputs.db.execute("INSERT INTO manifest SELECT * FROM manifest")
    with pytest.raises(ManifestError, match="duplicate row"):
        outputs.write(RunFolder(tmp_path))
