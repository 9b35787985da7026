"""ANS with per-column contexts and an optional row predictor (format: decoders/ctxans.py).

The encoder chooses, per tensor and by exact cost:

1. the predictor: none, or order ``p`` in ``orders`` with one least-squares coefficient set for
   the tensor or one per row, judged by the residuals' order-0 bits plus the coefficients;
2. the column classes: columns ranked by the root mean square of the coded values and cut into
   ``k`` classes of equal size (quantiles), ``k`` from 1 to ``max_classes``, judged by the
   classes' order-0 bits, their tables and the class ids.

``p = 0, k = 1`` is the plain per-tensor model, so this stage never costs more than ``ans`` by
more than a few bytes of header.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..decoders.ans import MAX_ALPHABET
from ..decoders.base import BYTES, SYMBOLS
from ..decoders.ctxans import (COEF_SHIFT, MAX_CLASSES, MAX_COEF, MAX_ORDER, MAX_PREDICTED_COLUMNS, class_bits,
                               class_models, pack_classes, predict_all, write_tables)
from ..decoders.intq import grid_shape
from ..entropy import order0_bits
from ..stage import EncodeContext, Encoded, Stage


@dataclass
class CtxParams:
    max_classes: int = 8
    orders: str = "1,2,4,8"  # prediction orders tried besides none; "0" for none

    def __post_init__(self) -> None:
        if not 1 <= self.max_classes <= MAX_CLASSES:
            raise ValueError(f"max_classes must be in 1..{MAX_CLASSES}, got {self.max_classes}")
        if any(not 0 <= p <= MAX_ORDER for p in self.order_list):
            raise ValueError(f"orders must be in 0..{MAX_ORDER}, got {self.orders!r}")

    @property
    def order_list(self) -> list[int]:
        try:
            return sorted({int(p) for p in self.orders.replace(" ", "").split(",") if p} - {0})
        except ValueError:
            raise ValueError(f"orders must be comma-separated integers, got {self.orders!r}") from None


@dataclass
class Predictor:
    coefs: np.ndarray  # (sets, p) int64; p = 0 for none
    residual: np.ndarray  # (rows, cols) int64
    rowwise: bool = False


def lags(x: np.ndarray, p: int) -> np.ndarray:
    """(rows, cols, p): each symbol's ``p`` predecessors in its row, zero before the row starts."""
    out = np.zeros(x.shape + (p,), dtype=np.float64)
    for lag in range(min(p, x.shape[1] - 1)):
        out[:, lag + 1 :, lag] = x[:, : x.shape[1] - 1 - lag]
    return out


def normal_equations(x: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, ``X^T X`` (rows, p, p) and ``X^T y`` (rows, p) of the least-squares problem
    ``x[i, j] ~ sum_l c[l] x[i, j - 1 - l]``; any order up to ``p`` is their leading block."""
    X = lags(x, p)
    return np.matmul(X.transpose(0, 2, 1), X), np.matmul(X.transpose(0, 2, 1), x[..., None].astype(np.float64))[..., 0]


def fit(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Coefficients in 1/64 solving the normal equations, clamped to the format's range."""
    p = gram.shape[-1]
    ridge = 1e-9 * (1 + np.trace(gram, axis1=-2, axis2=-1))[..., None, None] * np.eye(p)  # all-zero rows solve to 0
    coef = np.linalg.solve(gram + ridge, rhs[..., None])[..., 0]
    return np.clip(np.round(coef * (1 << COEF_SHIFT)), -MAX_COEF, MAX_COEF).astype(np.int64)


def best_predictor(x: np.ndarray, orders: list[int]) -> Predictor:
    """The predictor whose residuals cost least at order 0 (coefficients counted)."""
    best = Predictor(np.zeros((1, 0), dtype=np.int64), x)
    if x.shape[1] < 2 or x.shape[1] > MAX_PREDICTED_COLUMNS or not orders:
        return best
    cost = order0_bits(x.reshape(-1)) / 8  # order 0 (no prediction) is the starting point
    gram, rhs = normal_equations(x, max(orders))
    for p in orders:
        for rowwise in (False, True):
            g, r = gram[:, :p, :p], rhs[:, :p]
            coefs = fit(g, r) if rowwise else fit(g.sum(0, keepdims=True), r.sum(0, keepdims=True))
            residual = x - predict_all(x, coefs)
            if int(residual.max()) - int(residual.min()) >= MAX_ALPHABET:
                continue
            c = order0_bits(residual.reshape(-1)) / 8 + 2 * coefs.size
            if c < cost:
                best, cost = Predictor(coefs, residual, rowwise), c
    return best


def column_ranks(q: np.ndarray) -> np.ndarray:
    """Each column's rank by the RMS of its values (signed: a symmetric quantizer and a
    predictor both centre them on zero); the classes for any ``k`` cut these ranks into ``k``
    equal groups."""
    rms = np.sqrt((q.astype(np.float64) ** 2).mean(axis=0)) if q.size else np.zeros(q.shape[1])
    ranks = np.empty(q.shape[1], dtype=np.int64)
    ranks[np.argsort(rms, kind="stable")] = np.arange(q.shape[1])
    return ranks


def column_histograms(q: np.ndarray, n: int) -> np.ndarray:
    """(cols, n): each column's counts of the values 0..n-1; a class's table is their sum."""
    cols = q.shape[1]
    return np.bincount((np.arange(cols) * n + q).reshape(-1), minlength=cols * n).reshape(cols, n)


def tables_for(hist: np.ndarray, classes: np.ndarray, k: int) -> np.ndarray:
    tables = np.zeros((k, hist.shape[1]), dtype=np.int64)
    np.add.at(tables, classes, hist)
    return tables


def cost_bits(tables: np.ndarray, k: int, cols: int) -> float:
    """Coded size: order-0 bits of each class under its own table, plus tables and class ids."""
    bits = 0.0
    for t in tables:
        nz = t[t > 0]
        if nz.size > 1:
            bits -= float((nz * np.log2(nz / nz.sum())).sum())
    return bits + 8 * len(write_tables(tables)) + cols * class_bits(k)


class CtxANS(Stage):
    name = "ctxans"
    summary = "ANS with per-column context classes and a row predictor (both chosen per tensor)"
    consumes, produces = SYMBOLS, BYTES
    Params = CtxParams

    def encode(self, value: np.ndarray, ctx: EncodeContext) -> Encoded:
        import constriction

        rows, cols = grid_shape(ctx.meta.shape)
        pred = best_predictor(value.reshape(rows, cols).astype(np.int64), self.params.order_list)
        r = pred.residual
        lo = int(r.min()) if r.size else 0
        q = r - lo
        n = int(q.max()) + 1 if q.size else 1
        choices = []
        ranks, hist = column_ranks(r), column_histograms(q, n)
        for k in range(1, min(self.params.max_classes, max(cols, 1)) + 1):
            classes = ranks * k // max(cols, 1)
            tables = tables_for(hist, classes, k)
            choices.append((cost_bits(tables, k, cols), k, classes, tables))
        _, k, classes, tables = min(choices, key=lambda c: (c[0], c[1]))
        coder = constriction.stream.stack.AnsCoder()
        models = class_models(tables)
        if pred.coefs.shape[1] == 0:
            for c in reversed(range(k)):  # a stack: the last class encoded is the first decoded
                if models[c] is not None:
                    coder.encode_reverse(q[:, classes == c].reshape(-1).astype(np.int32), models[c])
        else:
            for j in reversed(range(cols)):  # decoded column by column, 0 first
                if models[classes[j]] is not None:
                    coder.encode_reverse(q[:, j].astype(np.int32), models[classes[j]])
        return Encoded(coder.get_compressed().astype("<u4").tobytes(),
                       {"k": k, "lo": lo, "n": n, "p": pred.coefs.shape[1], "rowwise": int(pred.rowwise)},
                       {"classes": pack_classes(classes, k), "tables": write_tables(tables)}
                       | ({"coefs": pred.coefs.astype("<i2").tobytes()} if pred.coefs.size else {}))
