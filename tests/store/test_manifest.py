"""Manifest: round trip, stable bytes, atomic writes, and ``file:line: reason`` for every bad row kind."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from store.errors import UsageError
from store.manifest import (
    ManifestError,
    ManifestRow,
    atomic_write_bytes,
    parse_row,
    read_labelled_rows,
    read_manifest,
    write_manifest,
)

SHA = "0123456789abcdef" * 4


def _rows() -> list[ManifestRow]:
    return [
        ManifestRow("train/cat/1.jpg", 3, "cat", "original", SHA),
        ManifestRow("train/cat/0.jpg", 3, "cat", "original", SHA),
        ManifestRow("images/cat/a.png", 3, "cat", "generated", "ab" * 32, "A photo of the class cat, asleep.",
                    0.81, 1, "run-1"),
        ManifestRow("/data/abs/é.jpg", 0, "café au lait", "original", "cd" * 32),
        ManifestRow("images/zebra/b.png", 12, "zebra", "generated", "ef" * 32, "A photo of the class zebra.",
                    0.5, 0, "run-1"),
    ]


def test_round_trip_in_stable_order(tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    assert write_manifest(path, _rows()) == 5
    got = read_manifest(path)
    assert sorted(got, key=ManifestRow.sort_key) == got
    assert set(got) == set(_rows())
    assert [(r.label, r.source, r.path) for r in got] == [
        (0, "original", "/data/abs/é.jpg"),
        (3, "original", "train/cat/0.jpg"),
        (3, "original", "train/cat/1.jpg"),
        (3, "generated", "images/cat/a.png"),
        (12, "generated", "images/zebra/b.png"),
    ]


def test_same_rows_give_identical_bytes(tmp_path: Path) -> None:
    rows = _rows()
    outputs = []
    for seed in range(4):
        random.Random(seed).shuffle(rows)
        path = tmp_path / f"m{seed}.jsonl"
        write_manifest(path, rows)
        outputs.append(path.read_bytes())
    assert len(set(outputs)) == 1
    lines = outputs[0].decode("utf-8").splitlines()
    assert outputs[0].endswith(b"\n") and len(lines) == 5
    first = json.loads(lines[0])
    assert list(first) == ["path", "label", "class_name", "source", "sha256"]  # no nulls on original rows
    assert "é" in lines[0]  # UTF-8, not \\u escapes


def test_write_replaces_atomically_and_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "manifest.jsonl"
    write_manifest(path, _rows()[:2])
    before = path.read_bytes()

    def boom(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_manifest(path, _rows())
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.jsonl"]


def test_duplicate_paths_are_rejected(tmp_path: Path) -> None:
    row = _rows()[0]
    twin = ManifestRow(row.path, 4, "dog", "original", SHA)
    with pytest.raises(ManifestError, match="duplicate row for image 'train/cat/1.jpg'"):
        write_manifest(tmp_path / "m.jsonl", [row, twin])
    assert not (tmp_path / "m.jsonl").exists()
    path = tmp_path / "hand.jsonl"
    path.write_text(row.to_json() + "\n" + twin.to_json() + "\n", encoding="utf-8")
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    assert str(err.value).startswith(f"{path}:2: duplicate row") and "first at line 1" in str(err.value)


_GOOD = {"path": "a.png", "label": 1, "class_name": "cat", "source": "original", "sha256": SHA}
_GEN = {**_GOOD, "source": "generated", "description": "A photo of the class cat.", "score": 0.7,
        "round": 0, "run_id": "r"}

BAD_ROWS = {
    "not json": ("{not json", "not valid JSON"),
    "not an object": ("[1, 2]", "must be a JSON object"),
    "unknown field": (json.dumps({**_GOOD, "colour": "red"}), "unknown field(s) colour"),
    "missing field": (json.dumps({k: v for k, v in _GOOD.items() if k != "sha256"}), "missing field(s) sha256"),
    "empty path": (json.dumps({**_GOOD, "path": ""}), "path must be"),
    "path not str": (json.dumps({**_GOOD, "path": 7}), "path must be"),
    "negative label": (json.dumps({**_GOOD, "label": -1}), "label must be"),
    "float label": (json.dumps({**_GOOD, "label": 1.0}), "label must be"),
    "bool label": (json.dumps({**_GOOD, "label": True}), "label must be"),
    "string label": (json.dumps({**_GOOD, "label": "1"}), "label must be"),
    "empty class": (json.dumps({**_GOOD, "class_name": ""}), "class_name must be"),
    "bad source": (json.dumps({**_GOOD, "source": "synthetic"}), "source must be one of"),
    "short sha": (json.dumps({**_GOOD, "sha256": "abc"}), "sha256 must be"),
    "upper sha": (json.dumps({**_GOOD, "sha256": SHA.upper()}), "sha256 must be"),
    "generated lacks": (json.dumps({**_GOOD, "source": "generated"}), "generated row lacks"),
    "description type": (json.dumps({**_GEN, "description": 3}), "description must be"),
    "score type": (json.dumps({**_GEN, "score": "high"}), "score must be"),
    "score nan": (json.dumps({**_GEN, "score": float("nan")}), "finite"),
    "round negative": (json.dumps({**_GEN, "round": -1}), "round must be"),
    "run_id type": (json.dumps({**_GEN, "run_id": 5}), "run_id must be"),
}


@pytest.mark.parametrize("kind", list(BAD_ROWS))
def test_malformed_row_reports_file_line_reason(tmp_path: Path, kind: str) -> None:
    line, reason = BAD_ROWS[kind]
    path = tmp_path / "manifest.jsonl"
    # Line 1 good, line 2 blank (skipped but counted), line 3 bad.
    path.write_text(json.dumps(_GEN) + "\n\n" + line + "\n", encoding="utf-8")
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    message = str(err.value)
    assert message.startswith(f"{path}:3: ") and reason in message
    assert "\n" not in message


def test_non_utf8_reports_its_line(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(json.dumps(_GOOD).encode() + b"\n" + b'{"path": "\xff"}\n')
    with pytest.raises(ManifestError, match=r"m\.jsonl:2: not UTF-8"):
        read_manifest(path)


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read manifest"):
        read_manifest(tmp_path / "absent.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    assert read_manifest(tmp_path / "empty.jsonl") == []


def test_parse_row_and_resolve(tmp_path: Path) -> None:
    row = parse_row(json.dumps(_GEN), where="x")
    assert (row.score, row.round, row.run_id) == (0.7, 0, "r")
    assert row.resolve(tmp_path) == tmp_path / "a.png"
    absolute = ManifestRow(str(tmp_path / "b.png"), 0, "cat", "original", SHA)
    assert absolute.resolve(Path("/elsewhere")) == tmp_path / "b.png"
    with pytest.raises(ManifestError, match="^where:9: label"):
        parse_row(json.dumps({**_GOOD, "label": -3}), where="where:9")


def test_the_trainers_reader_takes_rows_of_other_tools(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join([
        json.dumps({"path": "a.png", "label": 0}),
        json.dumps({"path": "b.png", "label": 2, "class_name": "zebra", "sha256": "AB" * 32, "width": 64}),
        "",
        json.dumps({**json.loads(ManifestRow("c.png", 1, "cat", "original", SHA).to_json()), "note": "x"}),
    ]) + "\n", encoding="utf-8")
    rows, unread = read_labelled_rows(path)
    assert [(r.path, r.label, r.class_name, r.sha256, r.where) for r in rows] == [
        ("a.png", 0, None, None, f"{path}:1"), ("b.png", 2, "zebra", "ab" * 32, f"{path}:2"),
        ("c.png", 1, "cat", SHA, f"{path}:4")]
    assert unread == ["note", "width"]
    assert rows[0].resolve(tmp_path) == tmp_path / "a.png"


@pytest.mark.parametrize(("row", "reason"), [
    ({"label": 1}, ":1: missing field(s) path (a row needs at least 'path' and 'label')"),
    ({"path": "a.png", "label": -1}, ":1: label must be an integer >= 0, got -1"),
    ({"path": "a.png", "label": "3"}, ":1: label must be an integer >= 0, got '3'"),
    ({"path": "a.png", "label": 1, "class_name": ""}, ":1: class_name must be a non-empty string when given"),
    ({"path": "a.png", "label": 1, "sha256": "abc"}, ":1: sha256 must be 64 hex digits when given"),
])
def test_the_trainers_reader_names_file_and_line(tmp_path: Path, row: dict, reason: str) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(ManifestError) as info:
        read_labelled_rows(path)
    assert str(info.value).startswith(f"{path}{reason}") and isinstance(info.value, UsageError)
    path.write_text('{"path": "a.png", "label": 0}\n{"path": "a.png", "label": 1}\n', encoding="utf-8")
    with pytest.raises(ManifestError, match=r"m.jsonl:2: duplicate row for image 'a.png' \(first at line 1\)"):
        read_labelled_rows(path)


def test_atomic_bytes_keep_the_old_file_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "plot.png"
    atomic_write_bytes(path, b"old")

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(path, b"new" * 1000)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["plot.png"]
