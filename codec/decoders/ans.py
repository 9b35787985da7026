"""Range-ANS over integer symbols with one static categorical model per tensor (constriction).

Stream layout (all counted in the container):

* blob ``table``: the symbol histogram as LEB128 varints, ``count[lo .. lo+n-1]``;
* params ``lo`` (smallest symbol) and ``n`` (alphabet size);
* data: the ANS coder's 32-bit words, little-endian (empty for a one-symbol alphabet).

Encoder and decoder build the model from the same integer counts (``counts / sum`` in
float64, then constriction's deterministic ``perfect=False`` fixed-point quantization), so
the model needs no floating-point bytes stored. The varint format is written and read here.
"""
from __future__ import annotations

import numpy as np

from .base import DecodeError, TensorMeta, blob, param

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


def decode(data: bytes, params: dict, blobs: dict, meta: TensorMeta) -> np.ndarray:
    import constriction

    n = param(params, "n", int, 1, MAX_ALPHABET)
    lo = param(params, "lo", int, INT32_MIN, INT32_MAX - n + 1)  # every symbol lo..lo+n-1 fits int32
    counts = read_varints(blob(blobs, "table"), n)
    if counts.sum() != meta.numel:
        raise DecodeError(f"ANS table counts {int(counts.sum())} symbols, tensor has {meta.numel}")
    if len(data) % 4:
        raise DecodeError("ANS stream length is not a multiple of 4")
    if n == 1:  # a constant tensor: the table says it all
        if data:
            raise DecodeError("ANS stream of a one-symbol alphabet must be empty")
        return np.full(meta.numel, lo, dtype=np.int32)
    words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        symbols = coder.decode(categorical(counts), meta.numel)
    except (ValueError, RuntimeError, AssertionError) as e:
        raise DecodeError(f"ANS: {e}") from None
    if not coder.is_empty():
        raise DecodeError("ANS stream has data left after the last symbol")
    return (symbols.astype(np.int64) + lo).astype(np.int32)
