"""``golfpack run``: verify an artifact with golfpack's own code, then execute it in a
subprocess (through torchrun for several processes) and collect its scores.

The file is read once; those bytes are verified (``verify.verify_bytes``) and then written to
a private temporary folder, and the interpreter runs that copy: a file swapped after the
check, or a name that an interpreter would read as an option (``-c...``), never runs. What the
artifact prints is untrusted input too: the result line must be a JSON object of the expected
fields and types, or the run fails with one line.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..model.distributed import torchrun_command
from ..trainer.launch import relay
from ..model.scoring import EvalSettings
from .verify import read_artifact, verify_bytes

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


@dataclass(frozen=True)
class ArtifactRun:
    """An artifact's own evaluation (its printed result, checked: :data:`RESULT_FIELDS`) and the
    file that ran."""

    val_loss: float
    val_bpb: float
    tokens: int
    bytes: int
    seconds: float
    wall_seconds: float
    world_size: int
    decode_seconds: float
    artifact_bytes: int
    sha256: str
    eval_limit_seconds: float = EVAL_LIMIT_SECONDS

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def run_artifact(path: str | Path, val: str, tokenizer: str, settings: EvalSettings = EvalSettings(), *,
                 nproc: int = 1, device: str | None = None, progress: bool = False) -> ArtifactRun:
    """Evaluate a verified copy of the artifact in a subprocess; with ``progress``, its phase
    lines are passed on to stderr as they come, escaped (``trainer/launch.py: relay``)."""
    path = Path(path)
    v = verify_bytes(path, read_artifact(path))  # a failure stops here, before any of its code runs
    args = ["eval", f"--val={os.path.abspath(val)}", f"--tokenizer={os.path.abspath(tokenizer)}",
            f"--seq-len={settings.seq_len}", f"--batch-seqs={settings.batch_seqs}", "--json"]
    args += [f"--stride={settings.stride}"] if settings.stride is not None else []
    args += [f"--device={device}"] if device else []
    args += ["--progress"] if progress else []
    with tempfile.TemporaryDirectory(prefix="golfpack-run-") as private:  # mode 0700: nobody else can swap it
        copy = os.path.join(private, "artifact.pyz")
        with open(copy, "xb") as f:
            f.write(v.data)
        returncode, stdout, tail = relay(torchrun_command(nproc, copy, *args), progress, errors="submission: error:")
    if returncode:
        raise RuntimeError(f"artifact evaluation failed: {tail or f'exit status {returncode}'}")
    return ArtifactRun(**parse_result(stdout), artifact_bytes=v.size, sha256=v.sha256)
