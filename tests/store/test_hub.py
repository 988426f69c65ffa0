"""Hub weights without a network (issue 21): one line at once when they are not cached; the cached copy
loads offline, with no retries. The hub is never contacted (HF_HUB_OFFLINE, or a dead endpoint)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from huggingface_hub import constants

from store import hub
from tests.agent.run_helpers import agent_argv, make_dataset
from tests.reliability.helpers import REPO, agent_env

REPO_ID = "timm/vit_base_patch32_clip_224.openai"
FILES = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens: unreachable at once
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    return root


def test_not_cached_and_unreachable_is_one_line(cache: Path) -> None:
    started = time.monotonic()
    with pytest.raises(hub.WeightsNotCached) as err:
        hub.prepare_hub_files("--clip-pretrained openai", REPO_ID, FILES, fix="pass a local file")
    assert time.monotonic() - started < hub.PROBE_S + 2
    text = str(err.value)
    assert "\n" not in text and REPO_ID in text and str(cache) in text and "cannot be reached" in text
    assert text.endswith("pass a local file")


def test_cached_and_unreachable_goes_offline(cache: Path) -> None:
    snapshot = cache / f"models--{REPO_ID.replace('/', '--')}" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / FILES[1]).write_bytes(b"weights")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    hub.prepare_hub_files("--clip-pretrained openai", REPO_ID, FILES, fix="x")
    assert constants.HF_HUB_OFFLINE is True  # the library now loads the cached file without a request


def test_agent_without_cached_clip_weights_fails_in_one_line(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data")
    argv = agent_argv(data, tmp_path / "run", "http://127.0.0.1:9/v1")
    at = argv.index("--clip-model")
    argv[at + 1:at + 2], argv[at + 3] = ["ViT-B-32"], "openai"
    env = agent_env(HF_HOME=str(tmp_path / "hf"))  # HF_HUB_OFFLINE=1, an empty cache
    with SimulatorURL() as url:
        argv = [url if a == "http://127.0.0.1:9/v1" else a for a in argv]
        done = subprocess.run([sys.executable, "-m", "agent.run", *argv], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "not in the local Hugging Face cache" in lines[0] and "--clip-pretrained none" in lines[0]
    assert "HF_HUB_OFFLINE is set" in lines[0] and not (tmp_path / "run").exists()


class SimulatorURL:
    """The simulator, so the run's reachability check passes and the CLIP load is what fails."""

    def __enter__(self) -> str:
        from scripts.sim.server import Simulator

        self.sim = Simulator()
        self.sim.__enter__()
        return self.sim.base_url

    def __exit__(self, *exc: object) -> None:
        self.sim.__exit__(None, None, None)
