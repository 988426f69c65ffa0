"""Suite-wide environment: tests run offline (no pretrained-weight downloads; subprocesses inherit this)."""

import os

# Without it, a `pretrained=` load waits ~54 s for the hub before failing (docs/DESIGN.md §10).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # datasets (the export tests) never reaches the network

import pytest  # noqa: E402
import torch  # noqa: E402  (every part of the suite imports it; here it costs nothing more)

DEFAULT_TORCH_THREADS = torch.get_num_threads()  # what a fresh process (a subprocess of a test) uses


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """Each test starts with a fresh process's torch thread count. A test that runs the trainer in-process
    (``--threads 1``) sets it for the whole process, and CPU numerics follow it: an image rendered in-process
    afterwards could then differ by a few pixels from the same image rendered by a subprocess."""
    yield
    if torch.get_num_threads() != DEFAULT_TORCH_THREADS:
        torch.set_num_threads(DEFAULT_TORCH_THREADS)
