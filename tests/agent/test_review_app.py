"""The review app's promises: every name escaped, images only from the run folder, tokens, read-only while
agent.run holds the folder, and the CLI's one-line errors. A real --review run against the simulator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image
from starlette.testclient import TestClient

from agent.lifecycle.lock import RunLock
from agent.review.app import create_app
from agent.review.cli import main as review_main
from agent.review.decisions import read_decisions
from agent.review.waiting import review_view
from agent.run import main
from scripts.sim.server import SimConfig, Simulator
from tests.agent.run_helpers import TINY_CLIP, agent_argv

EVIL = "<script>alert(1)</script>"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A --review run whose first class is named ``<script>alert(1)</script>`` (a train list: a name with '/')."""
    import json

    root = tmp_path_factory.mktemp("review-app")
    for label, colour in ((0, (200, 30, 30)), (1, (30, 200, 30))):
        (root / "data" / f"c{label}").mkdir(parents=True)
        Image.new("RGB", (24, 24), colour).save(root / "data" / f"c{label}" / "0.png")
    (root / "train.txt").write_text("c0/0.png 0\nc1/0.png 1\n", encoding="utf-8")
    (root / "names.txt").write_text(f"0\t{EVIL}\n1\tplain owl\n", encoding="utf-8")
    (root / "tail.txt").write_text(f"0\t{EVIL}\n1\tplain owl\n", encoding="utf-8")
    (root / "tiny-clip.json").write_text(json.dumps(TINY_CLIP), encoding="utf-8")
    argv = agent_argv(root, root / "run", "URL", "--review", k=3)
    at = argv.index("--images")
    argv[at:at + 2] = ["--train-list", str(root / "train.txt"), "--data-root", str(root / "data"),
                       "--class-names", str(root / "names.txt")]
    with Simulator(SimConfig(seed=0)) as sim:
        assert main([sim.base_url if a == "URL" else a for a in argv]) == 4
    return root / "run"


def client(run: Path, *, public: bool = False) -> TestClient:
    return TestClient(create_app(run, token="tok3n", public=public), base_url="http://127.0.0.1:8765")


def test_every_name_description_and_template_is_escaped(run_dir: Path) -> None:
    c = client(run_dir)
    index = c.get("/")
    assert index.status_code == 200 and EVIL not in index.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in index.text and "plain owl" in index.text
    page = c.get("/class", params={"name": EVIL})
    assert page.status_code == 200 and "<script" not in page.text.lower()
    hostile = "</textarea><script>alert(2)</script>"
    saved = c.post("/template", data={"token": "tok3n", "name": EVIL, "round": "0", "template": hostile},
                   follow_redirects=False)
    assert saved.status_code == 303
    assert read_decisions(run_dir, EVIL, 0)["template"] == hostile  # saved as typed, shown escaped
    page = c.get("/class", params={"name": EVIL})
    assert "<script" not in page.text.lower() and "&lt;/textarea&gt;&lt;script&gt;" in page.text
    c.post("/template", data={"token": "tok3n", "name": EVIL, "round": "0", "template": ""})


def test_images_resolve_only_inside_the_run_folder(run_dir: Path, tmp_path: Path) -> None:
    c = client(run_dir)
    view = next(v for v in review_view(run_dir) if v.name == "plain owl")
    item = view.payload["items"][0]
    good = c.get(f"/img/blobs/{item['sha256'][:2]}/{item['sha256']}.{item['ext']}")
    assert good.status_code == 200 and good.content[:4] == b"\x89PNG"
    secret = tmp_path / "secret.png"
    secret.write_bytes(good.content)
    link = run_dir / "blobs" / "escape.png"
    link.symlink_to(secret)
    try:
        for path in ("/img/%2e%2e/config.json", "/img/blobs/%2e%2e/%2e%2e/tail.txt", "/img//etc/passwd",
                     f"/img/{secret}", "/img/%2Fetc%2Fpasswd", "/img/config.json", "/img/blobs/escape.png",
                     "/img/blobs/..%2f..%2fsecret.png"):
            assert c.get(path).status_code == 404, path
    finally:
        link.unlink()


def test_posts_need_the_token_and_the_current_round(run_dir: Path) -> None:
    c = client(run_dir)
    form = {"name": "plain owl", "round": "0", "item": "0", "action": "reject", "note": "x"}
    assert c.post("/reject", data=form).status_code == 403
    assert c.post("/reject", data={**form, "token": "wrong"}).status_code == 403
    assert c.post("/reject", data={**form, "token": "tok3n", "round": "5"}).status_code == 409
    assert c.post("/reject", data={**form, "token": "tok3n", "item": "x"}).status_code == 404
    assert c.post("/reject", data={**form, "token": "tok3n", "item": "999"}).status_code == 404
    assert c.post("/apply", data={}).status_code == 403
    assert read_decisions(run_dir, "plain owl", 0) is None
    assert c.get("/reject").status_code == 405  # state changes are POSTs only
    # A loopback server answers only loopback Host headers (DNS rebinding).
    assert TestClient(create_app(run_dir, token="t"), base_url="http://evil.example").get("/").status_code == 400


def test_a_public_server_needs_the_token_on_every_request(run_dir: Path) -> None:
    c = client(run_dir, public=True)
    assert c.get("/").status_code == 403
    page = c.get("/", params={"token": "tok3n"})
    assert page.status_code == 200 and "class?name=plain+owl&amp;token=tok3n" in page.text


def test_read_only_while_agent_run_holds_the_folder(run_dir: Path) -> None:
    c = client(run_dir)
    form = {"token": "tok3n", "name": "plain owl", "round": "0", "item": "0", "action": "reject"}
    with RunLock(run_dir):
        refused = c.post("/reject", data=form)
        assert refused.status_code == 409 and "read-only" in refused.text
        assert 'id="locked"' in c.get("/").text
    assert read_decisions(run_dir, "plain owl", 0) is None
    assert c.post("/reject", data=form, follow_redirects=False).status_code == 303
    assert read_decisions(run_dir, "plain owl", 0)["reject"] == [{"index": 0, "note": ""}]
    assert c.post("/reject", data={**form, "action": "undo"}, follow_redirects=False).status_code == 303
    assert read_decisions(run_dir, "plain owl", 0) is None


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert review_main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a run folder" in err and err.count("\n") == 1


def test_a_non_loopback_host_prints_a_token_url_once(run_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "agent.review", str(run_dir), "--host", "0.0.0.0", "--port", "0"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        url = line.rsplit(" ", 1)[-1]
        assert "?token=" in url and len(url.split("token=")[1]) >= 32, line
        bare = url.split("?")[0]
        assert httpx.get(bare.replace("0.0.0.0", "127.0.0.1"), timeout=60).status_code == 403
        assert httpx.get(url.replace("0.0.0.0", "127.0.0.1"), timeout=60).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
