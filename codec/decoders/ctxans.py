"""ANS with per-column contexts: the columns of a symbol matrix are grouped into ``k`` classes
(by their magnitude, chosen at encode time) and each class has its own categorical table.

Why columns: a weight matrix's input columns differ in scale (some input features matter
more), and a per-row scale already normalises the rows, so after quantization the spread of
symbols differs from column to column, structure an order-0 coder cannot see.

Stream layout (all counted in the container):

* params ``k`` (classes, 1..16), ``lo`` (smallest symbol), ``n`` (alphabet size);
* blob ``classes``: each column's class, ``ceil(log2 k)`` bits a column, packed big-endian
  (``numpy.packbits``); empty when ``k == 1``;
* blob ``tables``: per class, LEB128 varints ``first, length, count[first], ...,
  count[first + length - 1]``: the class's histogram over symbols ``lo + first ..``, its zero
  tails left out (classes of small columns use a narrow range of the alphabet);
* data: one ANS stream of 32-bit words; class 0's symbols come first when decoding, each class
  in row-major order of its columns.
"""
from __future__ import annotations

import numpy as np

from .ans import INT32_MAX, INT32_MIN, MAX_ALPHABET, categorical, read_all_varints, write_varints
from .base import DecodeError, TensorMeta, blob, param
from .intq import grid_shape

MAX_CLASSES = 16


def class_bits(k: int) -> int:
    return max(k - 1, 0).bit_length()


def pack_classes(classes: np.ndarray, k: int) -> bytes:
    width = class_bits(k)
    if width == 0:
        return b""
    bits = ((classes[:, None] >> np.arange(width - 1, -1, -1)) & 1).astype(np.uint8)
    return np.packbits(bits.reshape(-1)).tobytes()


def unpack_classes(raw: bytes, k: int, cols: int) -> np.ndarray:
    width = class_bits(k)
    if width == 0:
        if raw:
            raise DecodeError("class stream of a one-class tensor must be empty")
        return np.zeros(cols, dtype=np.int64)
    if len(raw) != (cols * width + 7) // 8:
        raise DecodeError(f"class stream has {len(raw)} bytes for {cols} columns of {width} bits")
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[: cols * width].reshape(cols, width)
    classes = (bits.astype(np.int64) << np.arange(width - 1, -1, -1)).sum(axis=1)
    if classes.size and classes.max() >= k:
        raise DecodeError(f"column class {int(classes.max())} outside 0..{k - 1}")
    return classes


def write_tables(tables: np.ndarray) -> bytes:
    parts = []
    for t in tables:
        nz = np.flatnonzero(t)
        first, last = (int(nz[0]), int(nz[-1])) if nz.size else (0, -1)
        parts.append(np.concatenate([[first, last - first + 1], t[first : last + 1]]))
    return write_varints(np.concatenate(parts).astype(np.int64))


def read_tables(raw: bytes, k: int, n: int) -> np.ndarray:
    """``k`` histograms over ``n`` symbols from ``write_tables``' varints, every range checked."""
    tables = np.zeros((k, n), dtype=np.int64)
    values = read_all_varints(raw, k * (n + 2))
    pos = 0
    for c in range(k):
        if pos + 2 > values.size:
            raise DecodeError("truncated ANS tables")
        first, length = int(values[pos]), int(values[pos + 1])
        if first + length > n or pos + 2 + length > values.size:
            raise DecodeError(f"class {c} table covers symbols {first}..{first + length - 1} of {n}")
        tables[c, first : first + length] = values[pos + 2 : pos + 2 + length]
        pos += 2 + length
    if pos != values.size:
        raise DecodeError(f"{values.size - pos} stray values after the ANS tables")
    return tables


def decode(data: bytes, params: dict, blobs: dict, meta: TensorMeta) -> np.ndarray:
    import constriction

    k = param(params, "k", int, 1, MAX_CLASSES)
    n = param(params, "n", int, 1, MAX_ALPHABET)
    lo = param(params, "lo", int, INT32_MIN, INT32_MAX - n + 1)
    rows, cols = grid_shape(meta.shape)
    classes = unpack_classes(blob(blobs, "classes"), k, cols)
    tables = read_tables(blob(blobs, "tables"), k, n)
    members = [np.flatnonzero(classes == c) for c in range(k)]
    for c in range(k):
        if int(tables[c].sum()) != rows * members[c].size:
            raise DecodeError(f"class {c} table counts {int(tables[c].sum())} symbols, "
                              f"its {members[c].size} columns hold {rows * members[c].size}")
    if len(data) % 4:
        raise DecodeError("ANS stream length is not a multiple of 4")
    out = np.empty((rows, cols), dtype=np.int64)
    coder = constriction.stream.stack.AnsCoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
    try:
        for c in range(k):
            count = rows * members[c].size
            if count == 0:
                continue
            nonzero = np.flatnonzero(tables[c])
            if nonzero.size == 1:  # one symbol: nothing coded
                values = np.full(count, nonzero[0], dtype=np.int64)
            else:
                values = coder.decode(categorical(tables[c]), count).astype(np.int64)
            out[:, members[c]] = values.reshape(rows, members[c].size)
    except (ValueError, RuntimeError, AssertionError) as e:
        raise DecodeError(f"ANS: {e}") from None
    if not coder.is_empty():
        raise DecodeError("ANS stream has data left after the last symbol")
    return (out.reshape(-1) + lo).astype(np.int32)
