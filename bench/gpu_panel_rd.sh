#!/usr/bin/env bash
# The rate–distortion panel's `golfpack bench rd` runs on one CUDA machine, four at a time: each
# encodes on 4 CPU threads and scores the full validation prefix on the GPU in fp32. Every model
# folder bench/panel.py wrote is run (a folder holding final.pt).
# Usage: bench/gpu_panel_rd.sh PANEL_DIR VAL_SHARD TOKENIZER OUT_DIR
#   PANEL_DIR is bench/panel.py's --out (each model's final.pt with final.calib.pt beside it,
#   looplm/loop_lm.py, and the training shards in data/). Writes rd_<model>.txt
#   and .png to OUT_DIR. On an H200 (16 CPU cores) four took about 4.5 minutes (2026-12-02), before
#   --mirror (each export also scored at its mirror image, docs/benchmarks.md) doubled the scoring.
set -euo pipefail
panel=$1; val=$2; tok=$3; out=$4
mkdir -p "$out"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4 MKL_NUM_THREADS=4
common=(--train "$panel/data/fineweb_train_*.bin" --val "$val" --tokenizer "$tok" --val-tokens 0 --seq-len 1024
        --device cuda --mirror --force)
running=0
for dir in "$panel"/*/; do
  m=$(basename "$dir")
  [ -f "$dir/final.pt" ] || continue
  extra=(); [ -f "$dir/loop_lm.py" ] && extra=(--model "$dir/loop_lm.py:build")
  golfpack bench rd "$dir/final.pt" "${common[@]}" "${extra[@]}" --plot "$out/rd_$m.png" > "$out/rd_$m.txt" 2>&1 &
  running=$((running + 1))
  if [ "$running" -eq 4 ]; then wait; running=0; fi
done
wait
tail -n 5 "$out"/rd_*.txt
