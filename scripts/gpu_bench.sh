#!/usr/bin/env bash
# On a lent GPU: ViT-B/32 + LoRA training images/s (bf16 autocast, pre-decoded tensors and JPEG files;
# scripts/bench/gpu_bench_train.py), and image generation + CLIP scoring images/s (an SDXL-sized UNet at 512 px,
# 1-4 steps, batch 1/4/16; CLIP ViT-B/32 as the scorer runs it; scripts/bench/gpu_bench_gen.py), and the Ray path
# (`--ray`: a diffusers batch on 1 Ray actor on the GPU against the same batch in-process: overhead per batch,
# images/s, identical PNGs; scripts/bench/gpu_bench_ray.py).
#
# The GPU machine has torch, torchvision, timm, peft and huggingface_hub but not open_clip or diffusers, and
# it cannot reach any registry, so they and their missing pure-Python dependencies travel as wheels in .whl/
# (ignored by git). GPU_BENCH_PARTS="train gen" (the default) picks the parts of `run`; `GPU_BENCH_PARTS=gen`
# alone takes about two minutes; `GPU_BENCH_PARTS=ray` runs the Ray path alone (about two minutes: Ray's
# start-up, then 20 batches per size each way). Ray's wheel (79 MB) is over what a call can carry (64 MiB), so
# `fetch` repacks it without its Java jar and the dashboard's web client, which a Python cluster never loads
# (~44 MB); its missing pure-Python needs (jsonschema, pydantic for agent.providers.config) travel beside it.
#
#   bash scripts/gpu_bench.sh fetch    # here: download the wheels into .whl/ (PyPI reachable)
#   bash scripts/gpu_bench.sh run      # there: device tool, carry [".whl"], command "bash scripts/gpu_bench.sh run"
#                                      # (writes gpu_bench*.json, gpu_bench_gen.json, gpu_bench_ray.json)
#   one call for the Ray path alone:   carry [".whl"], command "GPU_BENCH_PARTS=ray bash scripts/gpu_bench.sh run"
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
# The Ray path's wheels (binary ones for cp312); ray itself is repacked by `fetch` (see above).
RAY_WHEELS=(ray==2.60.0 jsonschema==4.26.0 referencing==0.37.0 rpds-py==2026.9.1 jsonschema-specifications==2025.9.1
            pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5)
parts="${GPU_BENCH_PARTS:-train gen}"

case "$verb" in
fetch)
    # Pure-Python wheels: one download serves the GPU machine's Python 3.12.
    py=".venv/bin/python"; [ -x "$py" ] || py=python3
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${WHEELS[@]}" "${RAY_WHEELS[@]}"
    "$py" - .whl/ray-*.whl <<'PY'
import sys, zipfile, os
# Drop what a Python-only cluster never loads (Java workers' jar, the dashboard's web build) and their RECORD lines.
src = sys.argv[1]
if not any(n.startswith("ray/jars/") for n in zipfile.ZipFile(src).namelist()):
    sys.exit(0)  # repacked already
skip = ("ray/jars/", "ray/dashboard/client/build/")
tmp = src + ".tmp"
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zout:
    for info in zin.infolist():
        if info.filename.startswith(skip):
            continue
        data = zin.read(info)
        if info.filename.endswith(".dist-info/RECORD"):
            data = b"".join(l for l in data.splitlines(True) if not l.decode().startswith(skip))
        zout.writestr(info, data)
os.replace(tmp, src)
PY
    ls -l .whl; du -sh .whl
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
    if [[ " $parts " == *" ray "* ]]; then
        python3 -m scripts.bench.gpu_bench_ray --json "$out/gpu_bench_ray.json" 2>&1 | tee -a "$out/gpu_bench.log"
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
    if [[ " ${GPU_BENCH_PARTS:-} " == *" ray "* ]]; then  # opt-in: Ray's start-up costs a minute on a small CPU
        "$py" -m scripts.bench.gpu_bench_ray --dry --size 64 --steps 2 --sizes 1,4
    fi
    ;;
*)
    echo "usage: bash scripts/gpu_bench.sh fetch|run|dry [extra args for scripts/bench/gpu_bench_train.py]" >&2
    exit 2
    ;;
esac
