"""Ctrl-C while ``python -m trainer.train`` is still starting up: one stderr line, exit 130, no traceback.

Moments observed, not slept for (``tests.store.interrupt_helpers``): right after the start-up guard is in,
and once torch's shared library is mapped (torch, then open_clip and peft, are still importing).
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from store.interrupt import interrupt_line
from tests.store.interrupt_helpers import needs_proc, spawn, stop, wait_for, wait_for_guard
from tests.trainer.trainer_helpers import TinyData, train_argv

NOTE = "finished epochs are in checkpoints/last of --out (continue with --resume)"


def _maps_torch(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@needs_proc
@pytest.mark.parametrize("moment", ["module imports", "torch import"])
def test_ctrl_c_during_start_up_is_one_line(tiny_data: TinyData, tmp_path: Path, moment: str) -> None:
    proc = spawn(["-m", "trainer.train", *train_argv(tiny_data, tmp_path / "out")])
    wait_for_guard(proc)
    if moment == "torch import":
        wait_for(proc, lambda: _maps_torch(proc.pid), "torch to load")
    assert stop(proc, signal.SIGINT) == (130, [interrupt_line("trainer.train", signal.SIGINT, NOTE)])
    assert not (tmp_path / "out" / "checkpoints").exists()
