#!/usr/bin/env bash
# Issue 13's GPU figures in one call of at most 9 minutes on a lent CUDA machine (the `device` tool's `run`).
#
# Prepare here once (the device image has torch, peft, transformers and accelerate, not diffusers):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl diffusers==0.42.1
#   (diffusers is pure Python: the wheel is py3-none-any and any platform flag finds it)
# Then run it there with carry [".whl"] and timeout_s 560:
#   bash scripts/device_benchmark.sh
# It writes $OUT/benchmark-cuda.json, .md and .log; what it finished before a timeout is in the log.
set -uo pipefail
OUT=${OUT:-runs/device}
mkdir -p "$OUT"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site:$PWD || exit 1
else
    export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
# SD 1.5's topology at 512² (random weights: the real ones' cost), each precision/memory option, then the
# embedded model; LoRA 80 steps, 80 drag iterations, 35 denoising steps (the reference's defaults)
timeout 500 python3 scripts/benchmark.py --device cuda --models sd15,embedded --image 512 --lora-steps 80 \
    --drag-steps 80 --json "$OUT/benchmark-cuda.json" --markdown "$OUT/benchmark-cuda.md" 2>&1 \
    | grep -v "Loading" | tee "$OUT/benchmark-cuda.log"
