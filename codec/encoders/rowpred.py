"""An integer linear predictor along each row (format: decoders/rowpred.py).

The encoder chooses, per tensor and by the residuals' order-0 bits plus the coefficients: no
prediction, or order ``p`` in ``orders`` with one least-squares coefficient set for the tensor
or one per row. ``p = 0`` passes the symbols through, so this stage never costs more than a few
bytes of header.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..decoders.counts import MAX_ALPHABET
from ..decoders.base import SYMBOLS
from ..decoders.intq import grid_shape
from ..decoders.rowpred import COEF_SHIFT, MAX_COEF, MAX_ORDER, MAX_PREDICTED_COLUMNS, predict_all
from ..entropy import order0_bits
from ..stage import EncodeContext, Encoded, Stage


@dataclass
class RowPredParams:
    orders: str = "1,2,4,8"  # prediction orders tried besides none

    def __post_init__(self) -> None:
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


def residual_energy(gram: np.ndarray, rhs: np.ndarray, coefs: np.ndarray, energy: float) -> float:
    """``sum (x - pred)^2`` of the least-squares problem, from its normal equations (coefficients
    in 1/64; ``energy``: ``sum x^2``), without predicting anything."""
    c = coefs / float(1 << COEF_SHIFT)
    if coefs.shape[0] == 1:
        gram, rhs = gram.sum(0, keepdims=True), rhs.sum(0, keepdims=True)
    return energy - 2.0 * float((c * rhs).sum()) + float(np.einsum("sp,spq,sq->", c, gram, c))


def best_predictor(x: np.ndarray, orders: list[int]) -> Predictor:
    """The predictor whose residuals cost least at order 0 (coefficients counted). A predictor is
    only tried when its residual energy promises to save more bits than its coefficients cost
    (Gaussian rate, ``n/2 log2`` of the energy ratio, with the rounding's ``1/12`` a symbol):
    on learnt weights, which no predictor helps, that screen spares the trial predictions.
    Residuals wider than the entropy coders' alphabet are not offered."""
    best = Predictor(np.zeros((1, 0), dtype=np.int64), x)
    if x.shape[1] < 2 or x.shape[1] > MAX_PREDICTED_COLUMNS or not orders:
        return best
    cost = order0_bits(x.reshape(-1)) / 8  # order 0 (no prediction) is the starting point
    gram, rhs = normal_equations(x, max(orders))
    energy = float((x.astype(np.float64) ** 2).sum())
    for p in orders:
        for rowwise in (False, True):
            g, r = gram[:, :p, :p], rhs[:, :p]
            coefs = fit(g, r) if rowwise else fit(g.sum(0, keepdims=True), r.sum(0, keepdims=True))
            left = residual_energy(g, r, coefs, energy) + x.size / 12.0
            if not coefs.any() or 0.5 * x.size * np.log2(max(energy, 1e-12) / max(left, 1e-12)) <= 16 * coefs.size:
                continue
            residual = x - predict_all(x, coefs)
            if int(residual.max()) - int(residual.min()) >= MAX_ALPHABET:
                continue
            c = order0_bits(residual.reshape(-1)) / 8 + 2 * coefs.size
            if c < cost:
                best, cost = Predictor(coefs, residual, rowwise), c
    return best


class RowPred(Stage):
    name = "rowpred"
    summary = "integer linear predictor along each row (order and coefficients chosen per tensor)"
    consumes, produces = SYMBOLS, SYMBOLS
    Params = RowPredParams

    def encode(self, value: np.ndarray, ctx: EncodeContext) -> Encoded:
        rows, cols = grid_shape(ctx.meta.shape)
        pred = best_predictor(value.reshape(rows, cols).astype(np.int64), self.params.order_list)
        params = {"p": pred.coefs.shape[1], "rowwise": int(pred.rowwise)}
        blobs = {"coefs": pred.coefs.astype("<i2").tobytes()} if pred.coefs.size else {}
        return Encoded(pred.residual.reshape(-1).astype(np.int32), params, blobs)
