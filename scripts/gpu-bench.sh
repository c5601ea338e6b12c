#!/usr/bin/env bash
# One prepared run on a machine with an NVIDIA GPU: the `base` preset's shapes with random weights (nothing
# to download, so it also runs offline), bf16 where the GPU has it. Reports per-stage latency, TTFA against
# the naive cascade, the concurrency sweep and training steps per second; files go to $OUT (default
# gpu-bench/): bench.json, bench.png, and the console summary in summary.txt.
#
#   scripts/gpu-bench.sh                   # after `make setup`, or with mmdialog installed
#   OUT=/tmp/gpu REPEATS=5 scripts/gpu-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-bench}
REPEATS=${REPEATS:-9}
MMDIALOG=${MMDIALOG:-$( [ -x .venv/bin/mmdialog ] && echo .venv/bin/mmdialog || echo mmdialog )}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
"$MMDIALOG" bench --config base --random-weights --repeats "$REPEATS" --train-steps 30 --out "$OUT" \
    runtime.device=cuda runtime.precision=auto train.mixed_precision=auto \
    | tee "$OUT/summary.txt"
