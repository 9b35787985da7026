"""``golfpack run``: verify an artifact with golfpack's own code, then execute it in a
subprocess (through torchrun for several processes) and collect its scores.

Everything is checked before the artifact starts (``verify.verify_artifact``), and what it
prints is untrusted input: the result line must be a JSON object of the expected fields and
types, or the run fails with one line.
"""
from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

from ..model.console import printable
from ..model.distributed import torchrun_command
from ..model.scoring import check_eval_args
from .verify import verify_artifact

EVAL_LIMIT_SECONDS = 600.0  # the challenge's evaluation time limit
RESULT_FIELDS = {"val_loss": float, "val_bpb": float, "tokens": int, "bytes": int, "seconds": float,
                 "wall_seconds": float, "world_size": int, "decode_seconds": float}


def parse_result(stdout: str) -> dict:
    """The last line of ``stdout`` that is the artifact's JSON result, checked field by field."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError("artifact evaluation printed no result")
    try:
        doc = json.loads(lines[-1][:4096])
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict):
        raise RuntimeError("artifact printed a result that is not a JSON object")
    out = {}
    for key, kind in RESULT_FIELDS.items():
        v = doc.get(key)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
        if not ok or (kind is int and not isinstance(v, int)):
            raise RuntimeError(f"artifact printed a malformed result: '{key}' must be a non-negative {kind.__name__}")
        out[key] = kind(v)
    return out


def run_artifact(path: str | Path, val: str, tokenizer: str, nproc: int = 1, stride: int | None = None,
                 seq_len: int = 1024, batch_seqs: int = 32, device: str | None = None) -> dict:
    check_eval_args(seq_len, stride, batch_seqs)
    v = verify_artifact(path)  # layout, hashes, manifest, container: a failure stops here, before any of its code runs
    args = ["eval", "--val", val, "--tokenizer", str(tokenizer), "--seq-len", str(seq_len),
            "--batch-seqs", str(batch_seqs), "--json"]
    args += (["--stride", str(stride)] if stride is not None else []) + (["--device", device] if device else [])
    proc = subprocess.run(torchrun_command(nproc, str(v.path), *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    if proc.returncode:
        tail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit status {proc.returncode}"
        raise RuntimeError(f"artifact evaluation failed: {printable(tail[:300])}")
    return {**parse_result(proc.stdout), "artifact_bytes": v.size, "sha256": v.sha256,
            "eval_limit_seconds": EVAL_LIMIT_SECONDS}
