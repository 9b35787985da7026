"""Symbol histograms, the model both ANS coders (``ans``, ``ctxans``) build from them: counts
stored as LEB128 varints, and the categorical model made from the same integer counts on both
sides (``counts / sum`` in float64, then constriction's deterministic ``perfect=False``
fixed-point quantization), so no floating-point bytes are stored. The varint format is written
and read here."""
from __future__ import annotations

import numpy as np

from .base import DecodeError

MAX_ALPHABET = 1 << 16
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def write_varints(values: np.ndarray) -> bytes:
    out = bytearray()
    for v in values.tolist():
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out)


def read_varints(raw: bytes, count: int) -> np.ndarray:
    """Exactly ``count`` varints filling ``raw``."""
    out = read_all_varints(raw, count)
    if out.size != count:
        raise DecodeError(f"{out.size} values in the ANS table, expected {count}")
    return out


def read_all_varints(raw: bytes, limit: int) -> np.ndarray:
    """Every varint in ``raw`` (at most ``limit`` of them, each at most 9 bytes: 63 bits), in
    numpy: a table's cost is its bytes at C speed, never a Python loop per byte."""
    b = np.frombuffer(raw, dtype=np.uint8)
    ends = np.flatnonzero(b < 0x80)  # the last byte of each varint
    if ends.size > limit or (ends.size == limit and b.size > (ends[-1] + 1 if ends.size else 0)):
        raise DecodeError(f"more than {limit} values in the ANS table")
    if b.size and (ends.size == 0 or ends[-1] != b.size - 1):
        raise DecodeError("truncated or oversized varint in the ANS table")
    if not ends.size:
        return np.zeros(0, dtype=np.int64)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > 9:
        raise DecodeError("truncated or oversized varint in the ANS table")
    shifts = 7 * (np.arange(b.size) - np.repeat(starts, lengths))
    return np.add.reduceat((b & 0x7F).astype(np.int64) << shifts, starts)


def categorical(counts: np.ndarray):
    import constriction

    return constriction.stream.model.Categorical(counts / counts.sum(), perfect=False)
