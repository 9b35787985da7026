#!/usr/bin/env bash
# Baseline-config throughput on one CUDA GPU, for the trainer issue's acceptance figure.
# Usage: bench/gpu_throughput.sh DATA_DIR OUT_DIR [SECONDS]
#   DATA_DIR holds fineweb_train_*.bin, fineweb_val_*.bin and fineweb_1024_bpe.model.
# Prints the challenge-style log; the 'tokens_per_s_per_rank' figure compares with the
# challenge baseline's 524,288 tokens / 43.5 ms / 8 GPUs = 1.51 M tokens/s per GPU.
set -euo pipefail
data=$1; out=$2; seconds=${3:-180}
export PYTHONUNBUFFERED=1
common=(train_files="$data/fineweb_train_*.bin" val_files="$data/fineweb_val_*.bin"
        tokenizer="$data/fineweb_1024_bpe.model" device=cuda)
# 1. smoke test: eager, three steps, small batch (fails fast if the CUDA path is broken)
python -m golfpack.trainer "${common[@]}" out_dir="$out/smoke" iterations=3 compile=false \
    train_batch_tokens=65536 val_max_tokens=65536 val_loss_every=0 train_log_every=1 --force | grep -v '^config:'
# 2. the baseline config under torch.compile for a wall-clock budget, then GPTQ calibration
python -m golfpack.trainer "${common[@]}" out_dir="$out/baseline" max_wallclock_seconds="$seconds" \
    val_loss_every=0 train_log_every=50 calib_tokens=131072 --force | grep -v '^config:'
nvidia-smi --query-gpu=name,memory.used --format=csv
