"""Fixtures for the trainer tests (data helpers live in ``trainer_helpers``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.trainer.trainer_helpers import TinyData, make_tiny_data

# No pretrained weights are fetched in tests; without this a hub lookup can hang for a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def tiny_data(tmp_path: Path) -> TinyData:
    return make_tiny_data(tmp_path / "data")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models on a shared 2-core machine run ~10x faster on one thread; restore afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
