#!/usr/bin/env bash
# A records folder end to end on one CUDA GPU: a short baseline run (QAT on from 80%, GPTQ
# calibration on training data), `golfpack submit` with torchrun --nproc_per_node=1, then
# `golfpack check`. Prints the training throughput against the challenge's 1.51 M tokens/s per
# H100 (its 8xH100 baseline: 524,288 tokens per step, 43.5 ms per step, 8 GPUs), the step at
# which QAT switched on, and the round-trip val_bpb.
# Usage: bench/gpu_records.sh DATA_DIR OUT_DIR [SECONDS]   (DATA_DIR: fineweb_{train,val}_*.bin
# and fineweb_1024_bpe.model; SECONDS of training per seed, default 180)
set -euo pipefail
data=$1; out=$2; seconds=${3:-180}
export PYTHONUNBUFFERED=1
gp() { python -m golfpack.packer "$@"; }
data_args=(--train "$data/fineweb_train_*.bin" --val "$data/fineweb_val_*.bin" --tokenizer "$data/fineweb_1024_bpe.model")
gp train --device cuda "${data_args[@]}" --out "$out/seed-run" --iterations 20 --pipeline default \
    --set val_loss_every=0 --force  # a run whose config the records script packs
gp submit "$out/seed-run/final.pt" --out "$out/records" --seeds 1337 --nproc 1 --force "${data_args[@]}" \
    --set max_wallclock_seconds="$seconds" --set iterations=20000 --set qat_start_frac=0.8 \
    --set calib_tokens=262144 --set val_loss_every=0 --set train_log_every=100
gp check "$out/records"
log="$out/records/train_seed1337.log"
python - "$log" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
rate = float(re.findall(r"tokens_per_s_per_rank:([0-9]+)", text)[-1])
qat = re.search(r"qat:on step:([0-9]+) train_time:([0-9]+)ms", text)
bpb = re.search(r"final_golfpack_roundtrip_exact val_loss:\S+ val_bpb:(\S+)", text).group(1)
challenge = 524288 / 0.0435 / 8  # tokens/s per H100 in the challenge's 8xH100 baseline log
print(f"tokens/s per GPU: {rate:,.0f} = {rate / challenge:.2f}x the challenge's {challenge:,.0f}")
print(f"QAT switched on at step {qat.group(1)} ({int(qat.group(2)) / 1000:.1f} s)" if qat else "QAT never switched on")
print(f"round-trip val_bpb: {bpb}")
PY
