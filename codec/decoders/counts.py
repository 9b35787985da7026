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
    """Every varint in ``raw`` (at most ``limit`` of them)."""
    values: list[int] = []
    pos = 0
    while pos < len(raw):
        if len(values) >= limit:
            raise DecodeError(f"more than {limit} values in the ANS table")
        value = shift = 0
        while True:
            if pos >= len(raw) or shift > 56:
                raise DecodeError("truncated or oversized varint in the ANS table")
            b = raw[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        values.append(value)
    return np.array(values, dtype=np.int64)


def categorical(counts: np.ndarray):
    import constriction

    return constriction.stream.model.Categorical(counts / counts.sum(), perfect=False)
