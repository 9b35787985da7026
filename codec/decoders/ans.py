"""Range-ANS over integer symbols with one static categorical model per tensor (constriction).

Stream layout (all counted in the container):

* blob ``table``: the symbol histogram as LEB128 varints, ``count[lo .. lo+n-1]``;
* params ``lo`` (smallest symbol) and ``n`` (alphabet size);
* data: the ANS coder's 32-bit words, little-endian (empty for a one-symbol alphabet).

Encoder and decoder build the model from the same integer counts (``counts.py``), so the
model needs no floating-point bytes stored.
"""
from __future__ import annotations

import numpy as np

from .base import DecodeError, TensorMeta, blob, param
from .counts import INT32_MAX, INT32_MIN, MAX_ALPHABET, categorical, read_varints


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
