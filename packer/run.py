"""``golfpack run``: verify an artifact with golfpack's own code, then execute it in a
subprocess (through torchrun for several processes) and collect its scores."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .artifact import read_artifact

EVAL_LIMIT_SECONDS = 600.0  # the challenge's evaluation time limit


def run_artifact(path: str | Path, val: str, tokenizer: str, nproc: int = 1, stride: int | None = None,
                 seq_len: int = 1024, batch_seqs: int = 32, device: str | None = None) -> dict:
    art = read_artifact(path)  # hashes first: a mismatch stops here, before any of its code runs
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    launcher = [sys.executable] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    args = [str(art.path), "eval", "--val", val, "--tokenizer", str(tokenizer), "--seq-len", str(seq_len),
            "--batch-seqs", str(batch_seqs), "--json"]
    args += (["--stride", str(stride)] if stride else []) + (["--device", device] if device else [])
    proc = subprocess.run(launcher + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode:
        tail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit status {proc.returncode}"
        raise RuntimeError(f"artifact evaluation failed: {tail}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError("artifact evaluation printed no result")
    result = json.loads(lines[-1])
    return {**result, "artifact_bytes": art.size, "sha256": art.sha256, "eval_limit_seconds": EVAL_LIMIT_SECONDS}
