"""The lines a records script logs for the numbers a submission claims, written and parsed here
only: ``train_gpt.py`` writes them, ``golfpack submit`` reads them into ``submission.json`` and
``golfpack check`` reads them again to hold the JSON to them.

The formats follow the challenge's own ``train_gpt.py`` (``Code size: N bytes``,
``final_..._roundtrip_exact val_loss:X val_bpb:Y`` with 8 decimals); the trainer's step lines
(``step:N/M val_loss:... train_time:Tms step_avg:Ams``) give steps and the step average.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

MODEL_LINE = "Serialized model golfpack: {bytes} bytes ({file} sha256:{sha256})"
CODE_LINE = "Code size: {bytes} bytes"
TOTAL_LINE = "Total submission size golfpack: {bytes} bytes"
ROUNDTRIP_LINE = "final_golfpack_roundtrip val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} eval_time:{eval_ms:.0f}ms"
EXACT_LINE = "final_golfpack_roundtrip_exact val_loss:{val_loss:.8f} val_bpb:{val_bpb:.8f}"
FULL_LINE = "final_golfpack_roundtrip_full val_loss:{val_loss!r} val_bpb:{val_bpb!r}"  # every digit, to compare

NUM = r"([0-9]+(?:\.[0-9]+)?)"
PATTERNS = {
    "model": re.compile(r"^Serialized model golfpack: ([0-9]+) bytes \((\S+) sha256:([0-9a-f]{64})\)$"),
    "code": re.compile(r"^Code size: ([0-9]+) bytes$"),
    "total": re.compile(r"^Total submission size golfpack: ([0-9]+) bytes$"),
    "roundtrip": re.compile(rf"^final_golfpack_roundtrip val_loss:{NUM} val_bpb:{NUM} eval_time:([0-9]+)ms$"),
    "exact": re.compile(rf"^final_golfpack_roundtrip_exact val_loss:{NUM} val_bpb:{NUM}$"),
    "full": re.compile(r"^final_golfpack_roundtrip_full val_loss:([0-9.e+-]+) val_bpb:([0-9.e+-]+)$"),
    "step": re.compile(rf"^step:([0-9]+)/[0-9]+ val_loss:{NUM} val_bpb:{NUM} train_time:([0-9]+)ms step_avg:{NUM}ms$"),
}
RUN_ID = r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}"  # a run's name in its file names: no path, no leading dot
MAX_LOG_BYTES = 64 << 20  # a log is read whole; anything larger is not a records log


class LogError(ValueError):
    """A records log lacks a line a submission needs, or has it twice."""


@dataclass(frozen=True)
class RunNumbers:
    """What one seed's log says: the numbers ``submission.json`` may claim for it."""

    val_loss: float
    val_bpb: float
    model_bytes: int
    model_file: str
    model_sha256: str
    code_bytes: int
    artifact_bytes: int
    steps: int
    step_avg_ms: float
    train_time_ms: int
    eval_time_s: float


def parse_log(text: str, source: str) -> RunNumbers:
    """The numbers of one run; each summary line must appear exactly once, and the last step
    line gives steps and step average."""
    found: dict[str, list[tuple[str, ...]]] = {k: [] for k in PATTERNS}
    for line in text.splitlines():
        for key, pattern in PATTERNS.items():
            m = pattern.match(line.strip())
            if m:
                found[key].append(m.groups())
    for key in ("model", "code", "total", "roundtrip", "exact", "full"):
        if len(found[key]) != 1:
            raise LogError(f"{source}: expected one '{key}' line, found {len(found[key])}")
    if not found["step"]:
        raise LogError(f"{source}: no step line with val_loss/val_bpb")
    model, step = found["model"][0], found["step"][-1]
    loss, bpb = (float(x) for x in found["full"][0])
    if any(abs(float(x) - y) > 5.1e-9 for x, y in zip(found["exact"][0], (loss, bpb))):
        raise LogError(f"{source}: the exact and full round-trip lines disagree")
    return RunNumbers(loss, bpb, int(model[0]), model[1], model[2], int(found["code"][0][0]),
                      int(found["total"][0][0]), int(step[0]), float(step[4]), int(step[3]),
                      int(found["roundtrip"][0][2]) / 1000.0)
