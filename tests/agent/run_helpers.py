"""Shared set-up for the end-to-end run tests: a tiny ImageFolder dataset, a tiny CLIP config, CLI flags."""

from __future__ import annotations

import json
import random
import subprocess
from collections.abc import Callable
from pathlib import Path

from PIL import Image

TINY_CLIP = {"embed_dim": 64,
             "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}
CLASSES = {"red fox": 1, "snow owl": 2, "sea turtle": 3}  # class -> M_y real images


def make_dataset(root: Path, classes: dict[str, int] = CLASSES) -> Path:
    """``root/images/<class>/*.png`` (tiny, distinct colours), ``root/tail.txt`` and ``root/tiny-clip.json``."""
    rng = random.Random(0)
    for name, count in classes.items():
        folder = root / "images" / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", (24, 24), tuple(rng.randrange(256) for _ in range(3))).save(folder / f"{i}.png")
    (root / "tail.txt").write_text("# tail classes\n" + "\n".join(classes) + "\n", encoding="utf-8")
    (root / "tiny-clip.json").write_text(json.dumps(TINY_CLIP), encoding="utf-8")
    return root


def agent_argv(data: Path, out: Path, base_url: str, *extra: str, k: int = 6) -> list[str]:
    """Flags for ``python -m agent.run`` against the simulator, with limits that never slow a test down."""
    argv = ["--classes", str(data / "tail.txt"), "--images", str(data / "images"), "--out", str(out),
            "--run-id", "t1", "--target-per-class", str(k), "--threshold", "-1",
            "--clip-model", str(data / "tiny-clip.json"), "--clip-pretrained", "none"]
    for role in ("lmm", "llm", "t2i"):
        argv += [f"--{role}-base-url", base_url, f"--{role}-model", f"sim-{role}",
                 f"--{role}-per-minute", "100000", f"--{role}-max-attempts", "2",
                 f"--{role}-backoff-initial-s", "0.01", f"--{role}-timeout-s", "20"]
    return [*argv, *extra]


def sigkill_when(proc: subprocess.Popen[bytes], ready: Callable[[], bool], what: str, timeout: float = 240) -> None:
    """SIGKILL ``proc`` as soon as ``ready()``; fail if it ends first or ``timeout`` passes."""
    import signal
    import time

    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, f"the run never got to {what}"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
