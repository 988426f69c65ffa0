#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: no network, no GPU, no pretrained weights.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONHASHSEED=0
.venv/bin/python -m pytest "$@"
