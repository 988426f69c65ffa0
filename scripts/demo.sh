#!/usr/bin/env bash
# Set up (if needed) and run the offline demo: simulator + tiny CLIP -> manifest -> a short training run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/python -m scripts.demo "$@"
