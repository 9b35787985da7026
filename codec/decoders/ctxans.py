"""ANS with per-column contexts and an optional linear predictor along each row.

Columns: the columns of a symbol matrix are grouped into ``k`` classes (by their magnitude,
chosen at encode time) and each class has its own categorical table. Why: a weight matrix's
input columns differ in scale (some input features matter more), and a per-row scale already
normalises the rows, so after quantization the spread of symbols differs from column to
column, structure an order-0 coder cannot see.

Prediction: with order ``p > 0`` the coded values are residuals ``x[i, j] - pred[i, j]``, where
``pred[i, j] = (sum_l c[l] * x[i, j - 1 - l] + 32) >> 6`` over the row's ``p`` previous symbols
(zero before the row starts), with integer coefficients in 1/64 (one set per tensor, or one per
row). Why: some stored parameters are signals, not learnt noise (an STFT layer's windowed
cosines, a convolution whose taps move together across channels), and their rows are
predictable from their own past, as audio is in FLAC. Integer arithmetic makes the prediction
exact on every machine. Decoding then runs column by column, each column's rows in one call.

Reference rows (``refs = 1``, without prediction): a row may be coded as its difference from
one earlier row of the tensor, and such rows have their own ``k`` tables. Why: rows that
training barely moved (the embedding rows of rare tokens, pulled the same way through a tied
output layer) are near copies of each other, a repetition that per-column tables and a row
predictor cannot see and a dictionary coder (brotli, lrzip) partly can. Decoding adds each
referencing row's reference, in row order, after all residuals are decoded.

Stream layout (all counted in the container):

* params ``k`` (classes, 1..16), ``lo`` (smallest coded value), ``n`` (alphabet size),
  ``p`` (prediction order, 0..8), ``rowwise`` (0: one coefficient set, 1: one per row), and
  ``refs`` (1 when rows reference earlier rows; absent otherwise);
* blob ``refs`` (with ``refs``): a bitmap of the referencing rows (``numpy.packbits``, a bit a
  row), then each referencing row's reference, in row order, in ``bit_length(rows - 1)`` bits,
  packed big-endian; a reference is an earlier row;
* blob ``coefs``: the coefficients, int16 little-endian, ``p`` per set (absent when ``p = 0``);
* blob ``classes``: each column's class, ``ceil(log2 k)`` bits a column, packed big-endian
  (``numpy.packbits``); empty when ``k == 1``;
* blob ``tables``: per class, LEB128 varints ``first, length, count[first], ...,
  count[first + length - 1]``: the class's histogram over symbols ``lo + first ..``, its zero
  tails left out (classes of small columns use a narrow range of the alphabet); with ``refs``,
  ``2k`` tables: the plain rows' ``k``, then the referencing rows' ``k``;
* data: one ANS stream of 32-bit words. Without prediction class 0's values come first when
  decoding, each class in row-major order of its columns (with ``refs``: the plain rows'
  classes, then the referencing rows'); with prediction column 0's rows come first, then
  column 1's, each column under its class's table.
"""
from __future__ import annotations

import numpy as np

from .counts import INT32_MAX, INT32_MIN, MAX_ALPHABET, categorical, read_all_varints, write_varints
from .base import DecodeError, TensorMeta, blob, param
from .intq import grid_shape

MAX_CLASSES = 16
MAX_ORDER = 8
COEF_SHIFT = 6  # coefficients are in units of 1/64
MAX_COEF = 1 << 12  # |c| <= 64.0: a residual then stays within int32 for any int16 symbols
MAX_PREDICTED_COLUMNS = 1 << 14  # prediction decodes one column a call: bound the calls
MAX_REF_ROWS = 1 << 14  # references are added a row a call: bound the calls


def predict(x: np.ndarray, coefs: np.ndarray, j: int) -> np.ndarray:
    """Prediction of column ``j`` of ``x`` (rows, cols; int64) from its ``p`` previous columns;
    ``coefs`` is (rows or 1, p) int64. The decoder's, a column at a call; the encoder computes
    the same integers for all columns at once with :func:`predict_all` (a test holds them equal)."""
    acc = np.zeros(x.shape[0], dtype=np.int64)
    for lag in range(min(coefs.shape[1], j)):
        acc += coefs[:, lag] * x[:, j - 1 - lag]
    return (acc + (1 << (COEF_SHIFT - 1))) >> COEF_SHIFT


def predict_all(x: np.ndarray, coefs: np.ndarray) -> np.ndarray:
    """``predict`` for every column at once, from the known ``x`` (the encoder's side)."""
    acc = np.zeros_like(x)
    for lag in range(min(coefs.shape[1], x.shape[1])):
        acc[:, lag + 1 :] += coefs[:, lag : lag + 1] * x[:, : x.shape[1] - 1 - lag]
    return (acc + (1 << (COEF_SHIFT - 1))) >> COEF_SHIFT


def class_models(tables: np.ndarray) -> list:
    """Each class's ANS model, or None for a class of one symbol (nothing is coded for it)."""
    return [categorical(t) if np.count_nonzero(t) > 1 else None for t in tables]


def read_coefs(raw: bytes, p: int, sets: int) -> np.ndarray:
    if len(raw) != 2 * p * sets:
        raise DecodeError(f"coefficient stream has {len(raw)} bytes, expected {2 * p * sets}")
    coefs = np.frombuffer(raw, dtype="<i2").astype(np.int64).reshape(sets, p)
    if coefs.size and np.abs(coefs).max() > MAX_COEF:
        raise DecodeError(f"prediction coefficient outside +-{MAX_COEF}")
    return coefs


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
    the alphabet it is built over (a 65,536-symbol table costs 17); then one step per column
    with prediction, or per row with references."""
    p = param(params, "p", int, 0, MAX_ORDER)
    k = param(params, "k", int, 1, MAX_CLASSES)
    n = param(params, "n", int, 1, MAX_ALPHABET)
    tables = k * (2 if "refs" in params else 1) * (1 + (n >> 12))
    rows, cols = grid_shape(meta.shape)
    return tables + (cols if p else rows if "refs" in params else 0)


def decode(data: bytes, params: dict, blobs: dict, meta: TensorMeta) -> np.ndarray:
    import constriction

    k = param(params, "k", int, 1, MAX_CLASSES)
    n = param(params, "n", int, 1, MAX_ALPHABET)
    lo = param(params, "lo", int, INT32_MIN, INT32_MAX - n + 1)
    p = param(params, "p", int, 0, MAX_ORDER)
    rowwise = param(params, "rowwise", int, 0, 1)
    with_refs = param(params, "refs", int, 1, 1) if "refs" in params else 0
    rows, cols = grid_shape(meta.shape)
    if p and cols > MAX_PREDICTED_COLUMNS:
        raise DecodeError(f"prediction over {cols} columns (at most {MAX_PREDICTED_COLUMNS})")
    if not p and "coefs" in blobs:
        raise DecodeError("coefficient stream without prediction")
    if with_refs and (p or rows > MAX_REF_ROWS):
        raise DecodeError(f"reference rows need no prediction and at most {MAX_REF_ROWS} rows")
    if not with_refs and "refs" in blobs:
        raise DecodeError("reference stream without refs")
    coefs = read_coefs(blob(blobs, "coefs"), p, rows if rowwise else 1) if p else np.zeros((1, 0), np.int64)
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

    def values(c: int, count: int) -> np.ndarray:
        if models[c] is None:
            return np.full(count, np.flatnonzero(tables[c])[0] + lo, dtype=np.int64)
        return coder.decode(models[c], count).astype(np.int64) + lo

    try:
        if p == 0:
            for g, group in enumerate(groups):
                for c in range(k):
                    if members[c].size and group.size:
                        out[np.ix_(group, members[c])] = values(g * k + c, group.size * members[c].size).reshape(
                            group.size, members[c].size)
            for i in groups[1] if with_refs else ():
                out[i] += out[refs[i]]
            if with_refs and rows and (out.min() < INT32_MIN or out.max() > INT32_MAX):
                raise DecodeError("referenced symbols outside int32")
        else:
            for j in range(cols):
                out[:, j] = values(int(classes[j]), rows) + predict(out, coefs, j)
                if rows and (out[:, j].min() < INT32_MIN or out[:, j].max() > INT32_MAX):
                    raise DecodeError("predicted symbols outside int32")  # before the next column grows them
    except (ValueError, RuntimeError, AssertionError) as e:
        raise DecodeError(f"ANS: {e}") from None
    if not coder.is_empty():
        raise DecodeError("ANS stream has data left after the last symbol")
    return out.reshape(-1).astype(np.int32)
