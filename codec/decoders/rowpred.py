"""An integer linear predictor along each row: symbols in, residual symbols out.

With order ``p > 0`` the stage's output is ``x[i, j] - pred[i, j]``, where
``pred[i, j] = (sum_l c[l] * x[i, j - 1 - l] + 32) >> 6`` over the row's ``p`` previous symbols
(zero before the row starts), with integer coefficients in 1/64 (one set per tensor, or one per
row). Why: some stored parameters are signals, not learnt noise (an STFT layer's windowed
cosines, a convolution whose taps move together across channels), and their rows are
predictable from their own past, as audio is in FLAC. Language-model weights mostly are not
(of three models measured, only one trained by AdamW without weight decay gained, 0.1%), which is
why this is a stage of its own, put before an entropy coder where it pays
(``rtn -> rowpred -> ctxans``), and not shipped by the default pipeline. Integer arithmetic
makes the prediction exact on every machine; decoding runs column by column, each column's rows
in one call.

Stream layout (all counted in the container): params ``p`` (prediction order, 0..8; 0: the
symbols pass through) and ``rowwise`` (0: one coefficient set, 1: one per row); blob ``coefs``:
the coefficients, int16 little-endian, ``p`` per set (absent when ``p = 0``).
"""
from __future__ import annotations

import numpy as np

from .counts import INT32_MAX, INT32_MIN
from .base import DecodeError, TensorMeta, blob, param
from .intq import grid_shape

MAX_ORDER = 8
COEF_SHIFT = 6  # coefficients are in units of 1/64
MAX_COEF = 1 << 12  # |c| <= 64.0: a residual then stays within int32 for any int16 symbols
MAX_PREDICTED_COLUMNS = 1 << 14  # prediction decodes one column a call: bound the calls


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


def read_coefs(raw: bytes, p: int, sets: int) -> np.ndarray:
    if len(raw) != 2 * p * sets:
        raise DecodeError(f"coefficient stream has {len(raw)} bytes, expected {2 * p * sets}")
    coefs = np.frombuffer(raw, dtype="<i2").astype(np.int64).reshape(sets, p)
    if coefs.size and np.abs(coefs).max() > MAX_COEF:
        raise DecodeError(f"prediction coefficient outside +-{MAX_COEF}")
    return coefs


def steps(params: dict, meta: TensorMeta) -> int:
    """The decoder's Python-level work (``chain.MAX_DECODE_STEPS``): one step per column with
    prediction."""
    return 1 + (grid_shape(meta.shape)[1] if param(params, "p", int, 0, MAX_ORDER) else 0)


def decode(residual: np.ndarray, params: dict, blobs: dict, meta: TensorMeta) -> np.ndarray:
    p = param(params, "p", int, 0, MAX_ORDER)
    rowwise = param(params, "rowwise", int, 0, 1)
    rows, cols = grid_shape(meta.shape)
    if residual.size != rows * cols:
        raise DecodeError(f"{residual.size} residuals for {rows * cols} symbols")
    if not p:
        if "coefs" in blobs:
            raise DecodeError("coefficient stream without prediction")
        return residual
    if cols > MAX_PREDICTED_COLUMNS:
        raise DecodeError(f"prediction over {cols} columns (at most {MAX_PREDICTED_COLUMNS})")
    coefs = read_coefs(blob(blobs, "coefs"), p, rows if rowwise else 1)
    r = residual.reshape(rows, cols).astype(np.int64)
    out = np.empty_like(r)
    for j in range(cols):
        out[:, j] = r[:, j] + predict(out, coefs, j)
        if rows and (out[:, j].min() < INT32_MIN or out[:, j].max() > INT32_MAX):
            raise DecodeError("predicted symbols outside int32")  # before the next column grows them
    return out.reshape(-1).astype(np.int32)
