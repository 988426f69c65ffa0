"""Every entry point answers ``--version`` from the package metadata; the trainer's ``--help`` shows every
default (issue 21). Run as a user would: ``python -m <module>`` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULES = ("agent.run", "agent.traces", "agent.report", "trainer.train", "trainer.eval", "scripts.simulator")


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.parametrize("module", MODULES)
def test_version(module: str) -> None:
    done = cli(module, "--version")
    assert done.returncode == 0 and done.stdout.strip() == f"ltgc {version('ltgc')}", done.stderr


def test_trainer_help_shows_every_default() -> None:
    text = " ".join(cli("trainer.train", "--help").stdout.split()).split("options:", 1)[1]  # past the usage
    for flag, default in (("--model MODEL", "ViT-B-32"), ("--epochs EPOCHS", "10"), ("--lr LR", "0.0005"),
                          ("--batch-size BATCH_SIZE", "128"), ("--seed SEED", "0"), ("--lora-r LORA_R", "8")):
        after = text.split(flag, 1)[1].split(" --", 1)[0]
        assert f"default: {default}" in after, (flag, after)
