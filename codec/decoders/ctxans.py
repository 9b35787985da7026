"""ANS with per-column contexts and optional reference rows.

Columns: the columns of a symbol matrix are grouped into ``k`` classes (by their magnitude,
chosen at encode time) and each class has its own categorical table. Why: a weight matrix's
input columns differ in scale (some input features matter more), and a per-row scale already
normalises the rows, so after quantization the spread of symbols differs from column to
column, structure an order-0 coder cannot see.

Reference rows (``refs = 1``): a row may be coded as its difference from one earlier row of the
tensor, and such rows have their own ``k`` tables. Why: rows that training barely moved (the
embedding rows of rare tokens, pulled the same way through a tied output layer) are near
copies of each other, a repetition that per-column tables cannot see and a dictionary coder
(brotli, lrzip) partly can. Decoding adds each referencing row's reference, in row order,
after all residuals are decoded.

Stream layout (all counted in the container):

* params ``k`` (classes, 1..16), ``lo`` (smallest coded value), ``n`` (alphabet size), and
  ``refs`` (1 when rows reference earlier rows; absent otherwise);
* blob ``refs`` (with ``refs``): a bitmap of the referencing rows (``numpy.packbits``, a bit a
  row), then each referencing row's reference, in row order, in ``bit_length(rows - 1)`` bits,
  packed big-endian; a reference is an earlier row;
* blob ``classes``: each column's class, ``ceil(log2 k)`` bits a column, packed big-endian
  (``numpy.packbits``); empty when ``k == 1``;
* blob ``tables``: per class, LEB128 varints ``first, length, count[first], ...,
  count[first + length - 1]``: the class's histogram over symbols ``lo + first ..``, its zero
  tails left out (classes of small columns use a narrow range of the alphabet); with ``refs``,
  ``2k`` tables: the plain rows' ``k``, then the referencing rows' ``k``;
* data: one ANS stream of 32-bit words: class 0's values come first when decoding, each class
  in row-major order of its columns (with ``refs``: the plain rows' classes, then the
  referencing rows').
"""
from __future__ import annotations

import numpy as np

from .counts import INT32_MAX, INT32_MIN, MAX_ALPHABET, categorical, read_all_varints, write_varints
from .base import DecodeError, TensorMeta, blob, param
from .intq import grid_shape

MAX_CLASSES = 16
MAX_REF_ROWS = 1 << 14  # references are added a row a call: bound the calls


def class_models(tables: np.ndarray) -> list:
    """Each class's ANS model, or None for a class of one symbol (nothing is coded for it)."""
    return [categorical(t) if np.count_nonzero(t) > 1 else None for t in tables]


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


def ref_width(rows: int) -> int:
    return max(rows - 1, 0).bit_length()


def pack_refs(refs: np.ndarray) -> bytes:
    """``refs``: each row's reference, or -1 (``refs`` blob in the module docstring)."""
    width = ref_width(refs.size)
    used = refs[refs >= 0]
    bits = ((used[:, None] >> np.arange(width - 1, -1, -1)) & 1).astype(np.uint8).reshape(-1)
    return np.packbits(refs >= 0).tobytes() + np.packbits(bits).tobytes()


def unpack_refs(raw: bytes, rows: int) -> np.ndarray:
    head, width = (rows + 7) // 8, ref_width(rows)
    if len(raw) < head:
        raise DecodeError(f"reference stream has {len(raw)} bytes, its row bitmap alone {head}")
    flags = np.unpackbits(np.frombuffer(raw[:head], dtype=np.uint8))
    if flags[rows:].any():
        raise DecodeError("reference bitmap has bits past the last row")
    users = np.flatnonzero(flags[:rows])
    if len(raw) != head + (users.size * width + 7) // 8:
        raise DecodeError(f"reference stream has {len(raw)} bytes for {users.size} references of {width} bits")
    bits = np.unpackbits(np.frombuffer(raw[head:], dtype=np.uint8))[: users.size * width].reshape(users.size, width)
    refs = np.full(rows, -1, dtype=np.int64)
    refs[users] = (bits.astype(np.int64) << np.arange(width - 1, -1, -1)).sum(axis=1)
    if (refs[users] >= users).any():
        raise DecodeError("a row references itself or a later row")
    return refs


def steps(params: dict, meta: TensorMeta) -> int:
    """The decoder's Python-level work (``chain.MAX_DECODE_STEPS``): each class table it reads
    and models (two per class with references) is a step, and one more per 4,096 symbols of
    the alphabet it is built over (a 65,536-symbol table costs 17); then one step per row with
    references."""
    k = param(params, "k", int, 1, MAX_CLASSES)
    n = param(params, "n", int, 1, MAX_ALPHABET)
    tables = k * (2 if "refs" in params else 1) * (1 + (n >> 12))
    return tables + (grid_shape(meta.shape)[0] if "refs" in params else 0)


def decode(data: bytes, params: dict, blobs: dict, meta: TensorMeta) -> np.ndarray:
    import constriction

    k = param(params, "k", int, 1, MAX_CLASSES)
    n = param(params, "n", int, 1, MAX_ALPHABET)
    lo = param(params, "lo", int, INT32_MIN, INT32_MAX - n + 1)
    with_refs = param(params, "refs", int, 1, 1) if "refs" in params else 0
    if set(params) - {"k", "lo", "n", "refs"} or set(blobs) - {"classes", "tables", "refs"}:  # e.g. an older
        raise DecodeError("unknown ctxans parameters or side streams")  # format's predictor, never misread
    rows, cols = grid_shape(meta.shape)
    if with_refs and rows > MAX_REF_ROWS:
        raise DecodeError(f"reference rows need at most {MAX_REF_ROWS} rows")
    if not with_refs and "refs" in blobs:
        raise DecodeError("reference stream without refs")
    refs = unpack_refs(blob(blobs, "refs"), rows) if with_refs else np.full(rows, -1, dtype=np.int64)
    classes = unpack_classes(blob(blobs, "classes"), k, cols)
    groups = [np.flatnonzero(refs < 0), np.flatnonzero(refs >= 0)][: 1 + with_refs]
    tables = read_tables(blob(blobs, "tables"), k * len(groups), n)
    members = [np.flatnonzero(classes == c) for c in range(k)]
    for g, group in enumerate(groups):
        for c in range(k):
            if int(tables[g * k + c].sum()) != group.size * members[c].size:
                raise DecodeError(f"class {c} table counts {int(tables[g * k + c].sum())} symbols, "
                                  f"its {members[c].size} columns hold {group.size * members[c].size}")
    if len(data) % 4:
        raise DecodeError("ANS stream length is not a multiple of 4")
    out = np.empty((rows, cols), dtype=np.int64)
    coder = constriction.stream.stack.AnsCoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
    models = class_models(tables)
    try:
        for g, group in enumerate(groups):
            for c in range(k):
                if not (members[c].size and group.size):
                    continue
                count = group.size * members[c].size
                if models[g * k + c] is None:  # a class of one symbol: nothing was coded for it
                    values = np.full(count, np.flatnonzero(tables[g * k + c])[0], dtype=np.int64)
                else:
                    values = coder.decode(models[g * k + c], count).astype(np.int64)
                out[np.ix_(group, members[c])] = (values + lo).reshape(group.size, members[c].size)
        for i in groups[1] if with_refs else ():
            out[i] += out[refs[i]]
        if with_refs and rows and (out.min() < INT32_MIN or out.max() > INT32_MAX):
            raise DecodeError("referenced symbols outside int32")
    except (ValueError, RuntimeError, AssertionError) as e:
        raise DecodeError(f"ANS: {e}") from None
    if not coder.is_empty():
        raise DecodeError("ANS stream has data left after the last symbol")
    return out.reshape(-1).astype(np.int32)
