#!/usr/bin/env bash
# On a lent GPU: ViT-B/32 + LoRA training images/s (bf16 autocast, pre-decoded tensors and JPEG files;
# scripts/bench/gpu_bench_train.py), and image generation + CLIP scoring images/s (an SDXL-sized UNet at 512 px,
# 1-4 steps, batch 1/4/16; CLIP ViT-B/32 as the scorer runs it; scripts/bench/gpu_bench_gen.py).
#
# The GPU machine has torch, torchvision, timm, peft and huggingface_hub but not open_clip or diffusers, and
# it cannot reach any registry, so they and their missing pure-Python dependencies travel as wheels in .whl/
# (ignored by git; see /work/.library/device/README.md). GPU_BENCH_PARTS="train gen" (the default) picks
# the parts of `run`; `GPU_BENCH_PARTS=gen` alone takes about two minutes.
#
#   bash scripts/gpu_bench.sh fetch    # here: download the wheels into .whl/ (PyPI reachable)
#   bash scripts/gpu_bench.sh run      # there: device tool, carry [".whl"], command "bash scripts/gpu_bench.sh run"
#                                      # (writes gpu_bench*.json and gpu_bench_gen.json)
#   bash scripts/gpu_bench.sh dry      # CPU, tiny config, local .venv: checks the code path (CI runs this)
#
# `run` writes $OUT/gpu_bench.json and $OUT/gpu_bench.log when $OUT is set (the device tool sets it).
# Extra arguments after the verb go to scripts/bench/gpu_bench_train.py (e.g. --batch-size 512 --compile).
# `dry` runs both scripts' --dry paths (CPU, tiny configs); CI runs them through tests/scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
verb="${1:-}"
shift || true
WHEELS=(open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
        diffusers==0.42.1 importlib_metadata==10.2.0 lazy-importer==0.1.0 zipp==4.1.2)
parts="${GPU_BENCH_PARTS:-train gen}"

case "$verb" in
fetch)
    # Pure-Python wheels: one download serves the GPU machine's Python 3.12.
    py=".venv/bin/python"; [ -x "$py" ] || py=python3
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
    ls -l .whl
    ;;
run)
    [ -d .whl ] || { echo "gpu_bench.sh: .whl/ missing: run 'bash scripts/gpu_bench.sh fetch' here first and carry .whl" >&2; exit 2; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
    out="${OUT:-/tmp}"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    if [[ " $parts " == *" gen "* ]]; then
        python3 -m scripts.bench.gpu_bench_gen --json "$out/gpu_bench_gen.json" 2>&1 | tee -a "$out/gpu_bench.log"
    fi
    if [[ " $parts " == *" train "* ]]; then
        # Two batch sizes in one lease: 256 (the trainer's default scale) and 512 (to see if the GPU is fed).
        python3 -m scripts.bench.gpu_bench_train --batch-size 256 --json "$out/gpu_bench.json" "$@" 2>&1 | tee -a "$out/gpu_bench.log"
        python3 -m scripts.bench.gpu_bench_train --batch-size 512 --json "$out/gpu_bench_b512.json" "$@" 2>&1 | tee -a "$out/gpu_bench.log"
    fi
    ;;
dry)
    export HF_HUB_OFFLINE=1
    py=".venv/bin/python"; [ -x "$py" ] || py=python3
    "$py" -m scripts.bench.gpu_bench_train --dry "$@"
    "$py" -m scripts.bench.gpu_bench_gen --dry
    ;;
*)
    echo "usage: bash scripts/gpu_bench.sh fetch|run|dry [extra args for scripts/bench/gpu_bench_train.py]" >&2
    exit 2
    ;;
esac
