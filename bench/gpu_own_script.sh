#!/usr/bin/env bash
# The challenge's own train_gpt.py with golfpack's export (docs/own-script.md): patch it
# (bench/own_script.py), inline golfpack (`golfpack inline`), run the records script under
# torchrun on NPROC GPUs (8 for the challenge's 8xH100), then `golfpack check` the folder.
# Prints the code ledger, the calibration time the wall clock reserved for, the bytes and the
# round-trip val_bpb. Usage:
#   bench/gpu_own_script.sh CHALLENGE_TRAIN_GPT DATA_DIR OUT_DIR [NPROC] [SECONDS]
# CHALLENGE_TRAIN_GPT: the baseline train_gpt.py of openai/parameter-golf (golfpack ships none of
# it); DATA_DIR: fineweb_{train,val}_*.bin and fineweb_1024_bpe.model; SECONDS: the wall clock
# (default 600; CALIB_RESERVE_SECONDS of it, default 12, is left for the calibration).
set -euo pipefail
challenge=$1; data=$2; out=$3; nproc=${4:-8}; seconds=${5:-600}
export PYTHONUNBUFFERED=1
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
python "$here/own_script.py" "$challenge" "$out/train_gpt_golfpack.py"
python -m golfpack.packer inline "$out/train_gpt_golfpack.py" --out "$out/records" --force
cd "$out/records"
SEED=1337 RUN_ID=seed1337 DATA_PATH="$data" TOKENIZER_PATH="$data/fineweb_1024_bpe.model" \
    MAX_WALLCLOCK_SECONDS="$seconds" torchrun --standalone --nproc_per_node="$nproc" train_gpt.py
cp logs/seed1337.txt train_seed1337.log
python - <<'PY'
import json, re
text = open("train_seed1337.log").read()
exact = float(re.search(r"final_golfpack_roundtrip_exact val_loss:\S+ val_bpb:(\S+)", text).group(1))
total = int(re.search(r"Total submission size golfpack: (\d+) bytes", text).group(1))
print(re.search(r"calibration: .*", text).group(0))
print(f"total {total:,} bytes ({16_000_000 - total:,} under the cap); round-trip val_bpb {exact:.8f}")
json.dump({"val_bpb": exact, "seed_results": {"1337": {"val_bpb": exact, "artifact_bytes": total}}},
          open("submission.json", "w"))
PY
rm -rf logs final_model.pt
python -m golfpack.packer check .
