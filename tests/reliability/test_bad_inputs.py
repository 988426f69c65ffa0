"""The bad-input table: each mistake is one clear error line and exit 2, and nothing is written anywhere.

Warnings (duplicate class lines, a corrupt image without ``--strict``) and odd class names (``../``, ``/``,
NUL, control characters, 500 characters) do not stop a run: it goes on, and every file it writes stays
inside the run folder under a safe slug.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.run import main
from scripts.sim.server import SimConfig, Simulator
from store.slug import slugify
from tests.agent.run_helpers import agent_argv, make_dataset
from tests.reliability.helpers import files_under, summary

CLASSES = {"red fox": 1, "snow owl": 2}


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in files_under(root)}


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _set(argv: list[str], flag: str, value: str) -> list[str]:
    return [*argv, flag, value]


# Each case: (id, how to break the inputs -> extra argv, regex the one error line must match)
Breaker = Callable[[Path, list[str]], list[str]]


def _empty_classes(data: Path, argv: list[str]) -> list[str]:
    (data / "tail.txt").write_text("# nothing here\n\n", encoding="utf-8")
    return argv


def _class_without_images(data: Path, argv: list[str]) -> list[str]:
    (data / "images" / "sea turtle").mkdir()
    (data / "tail.txt").write_text("red fox\nsea turtle\n", encoding="utf-8")
    return argv


def _non_utf8(data: Path, argv: list[str]) -> list[str]:
    (data / "tail.txt").write_bytes(b"red fox\ncaf\xe9 owl\n")
    return argv


def _missing_folder(data: Path, argv: list[str]) -> list[str]:
    return _set(argv, "--images", str(data / "no-such-folder"))


def _corrupt_image_strict(data: Path, argv: list[str]) -> list[str]:
    (data / "images" / "snow owl" / "9.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return [*argv, "--strict"]


CASES: list[tuple[str, Breaker, str]] = [
    ("empty classes file", _empty_classes, r"tail.txt: no classes listed"),
    ("class with no images", _class_without_images, r"class 'sea turtle' has no images"),
    ("non-UTF-8 classes file", _non_utf8, r"tail.txt: not UTF-8 text \(byte 11\)"),
    ("missing image folder", _missing_folder, r"--images .*no-such-folder: not a folder"),
    ("corrupt image with --strict", _corrupt_image_strict, r"9.png: not a readable image .*--strict"),
    ("K < 1", lambda d, a: _set(a, "--target-per-class", "0"), r"--target-per-class: must be an integer >= 1"),
    ("R < 0", lambda d, a: _set(a, "--max-rounds", "-1"), r"--max-rounds: must be an integer >= 0"),
    ("cosine threshold > 1", lambda d, a: _set(a, "--threshold", "1.5"), r"--threshold: must be from -1 to 1"),
    ("softmax threshold < 0", lambda d, a: [*_set(a, "--threshold", "-0.2"), "--score", "softmax"],
     r"--threshold: must be from 0 to 1 with --score softmax"),
]


@pytest.mark.parametrize(("case", "breaker", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, capsys, case, breaker, message):
    data = make_dataset(tmp_path / "data", CLASSES)
    out = tmp_path / "run"
    argv = breaker(data, agent_argv(data, out, "http://127.0.0.1:9/v1"))
    before = snapshot(tmp_path)
    monkeypatch.chdir(data)  # a stray relative write would land here and show up in the snapshot
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert re.search(message, line), line
    assert snapshot(tmp_path) == before and not out.exists()


def test_unreadable_image_folder_is_one_line(tmp_path, monkeypatch, capsys):
    data = make_dataset(tmp_path / "data", CLASSES)
    folder = data / "images" / "snow owl"
    real_iterdir = Path.iterdir

    def iterdir(self: Path):  # root ignores chmod, so the refusal is made to happen where the OS would
        if self == folder:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    assert main(agent_argv(data, tmp_path / "run", "http://127.0.0.1:9/v1")) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"--images {folder}: cannot list" in line and "Permission denied" in line
    assert not (tmp_path / "run").exists()


def test_missing_api_key_for_a_remote_url(tmp_path, monkeypatch, capsys):
    data = make_dataset(tmp_path / "data", CLASSES)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    argv = agent_argv(data, tmp_path / "run", "http://127.0.0.1:9/v1", "--llm-base-url", "https://llm.example.com/v1")
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "OPENAI_API_KEY is not set" in line and "llm.example.com" in line
    assert not (tmp_path / "run").exists()


def test_unreachable_base_url_fails_fast_naming_it(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", CLASSES)
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    started = time.monotonic()
    assert main(agent_argv(data, tmp_path / "run", url)) == 2
    assert time.monotonic() - started < 15
    line = one_error_line(capsys.readouterr().err)
    assert url in line and "cannot connect" in line and "attempt" in line
    assert not (tmp_path / "run").exists()


ODD = ["../escape", "a/b/../../c", "nul\x00name", "bell\x07and\x1b[2Jclear", "long " + "x" * 495]


def test_warnings_and_odd_names_run_inside_the_run_folder(tmp_path, monkeypatch, capsys):
    data = make_dataset(tmp_path / "data", {slugify(n): 1 for n in ODD} | {"red fox": 2})
    (data / "images" / "red fox" / "7.png").write_bytes(b"not an image at all")  # corrupt: skipped
    lines = ["red fox", *ODD, "red fox"]  # the last line repeats the first
    (data / "tail.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    outside = {p for p in files_under(tmp_path) if out not in p.parents}
    monkeypatch.chdir(data)
    with Simulator(SimConfig(seed=0)) as sim:
        code = main(agent_argv(data, out, sim.base_url, k=2))
    err = capsys.readouterr().err
    assert code in (0, 1) and "Traceback" not in err
    assert re.search(r"warning: .*tail.txt:7: class 'red fox' is listed again", err)
    assert re.search(r"warning: .*7.png: not a readable image .*skipped", err)
    info = summary(out)
    assert sorted(info["classes"]) == sorted(["red fox", *ODD])
    assert info["classes"]["red fox"]["M_y"] == 2  # the corrupt third image is not counted
    assert {p for p in files_under(tmp_path) if out not in p.parents} == outside
    for path in files_under(out):
        assert path.resolve().is_relative_to(out.resolve()), path
    slugs = [p.name for p in (out / "images").iterdir()] if (out / "images").exists() else []
    assert all(re.fullmatch(r"[a-z0-9-]{1,80}", s) for s in slugs), slugs
