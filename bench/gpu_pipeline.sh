#!/usr/bin/env bash
# The whole pipeline on one CUDA GPU: the baseline config trained under torch.compile with QAT
# switched on halfway (the codec's quantizer inside the compiled graph), calibration, build
# with the default pipeline, then the artifact run on the GPU next to the float checkpoint.
# Usage: bench/gpu_pipeline.sh DATA_DIR OUT_DIR [SECONDS]
set -euo pipefail
data=$1; out=$2; seconds=${3:-90}
export PYTHONUNBUFFERED=1
gp() { python -m golfpack.packer "$@"; }
val=("--val" "$data/fineweb_val_*.bin" "--tokenizer" "$data/fineweb_1024_bpe.model")
gp train --device cuda --train "$data/fineweb_train_*.bin" "${val[@]}" --out "$out/qat" \
    --max-wallclock-seconds "$seconds" --pipeline default --qat-start 0.5 --calib-tokens 131072 \
    --set val_loss_every=0 --set train_log_every=50 --force
gp build "$out/qat/final.pt" --out "$out/qat.pyz" --force | grep -v '^blocks\.[1-8]\.'
gp run "$out/qat.pyz" "${val[@]}" --device cuda
gp eval "$out/qat/final.pt" "${val[@]}" --device cuda
