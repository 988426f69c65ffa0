"""Suite-wide environment: tests run offline (no pretrained-weight downloads; subprocesses inherit this)."""

import os

# Without it, a `pretrained=` load waits ~54 s for the hub before failing (docs/DESIGN.md §10).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # datasets (the export tests) never reaches the network
