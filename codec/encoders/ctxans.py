"""ANS with per-column contexts and optional reference rows (format: decoders/ctxans.py).

The encoder chooses, per tensor and by exact cost:

1. what is coded: the symbols; or, with ``refs``, each row's difference from its nearest
   earlier row (squared distance) where that distance is below ``alpha`` times the row's own
   squared norm, for each ``alpha`` of :data:`REF_ALPHAS`;
2. the column classes: columns ranked by the root mean square of the coded values and cut into
   ``k`` classes of equal size (quantiles), ``k`` from 1 to ``max_classes``, judged by the
   classes' order-0 bits, their tables and the class ids (and the references).

``k = 1`` without references is the plain per-tensor model, so this stage never costs more
than ``ans`` by more than a few bytes of header. (A predictor along each row is the stage
before it, ``rowpred``, where a tensor's rows are signals.)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..decoders.counts import MAX_ALPHABET
from ..decoders.base import BYTES, SYMBOLS
from ..decoders.ctxans import (MAX_CLASSES, MAX_REF_ROWS, class_bits, class_models, pack_classes, pack_refs, ref_width,
                               write_tables)
from ..decoders.intq import grid_shape
from ..stage import EncodeContext, Encoded, Stage


REF_ALPHAS = (0.25, 0.5, 0.75, 1.0)  # a row references its nearest earlier row within alpha x its squared norm
REF_BLOCK = 1024  # rows whose distances to every earlier row are computed at once


@dataclass
class CtxParams:
    max_classes: int = 8
    refs: bool = True  # try reference rows

    def __post_init__(self) -> None:
        if not 1 <= self.max_classes <= MAX_CLASSES:
            raise ValueError(f"max_classes must be in 1..{MAX_CLASSES}, got {self.max_classes}")


def nearest_earlier_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's nearest earlier row by squared distance, that distance (row 0: -1, inf) and
    the row's squared norm, a block of rows at a time (the distances of all pairs of an
    8,192-row embedding would take half a gigabyte)."""
    xf = x.astype(np.float64)
    sq = (xf * xf).sum(1)
    best, dist = np.full(x.shape[0], -1, dtype=np.int64), np.full(x.shape[0], np.inf)
    for lo in range(1, x.shape[0], REF_BLOCK):
        hi = min(lo + REF_BLOCK, x.shape[0])
        d = sq[lo:hi, None] + sq[None, :hi] - 2.0 * (xf[lo:hi] @ xf[:hi].T)
        d[np.arange(hi - lo)[:, None] <= np.arange(hi)[None, :] - lo] = np.inf  # earlier rows only
        best[lo:hi], dist[lo:hi] = d.argmin(1), d.min(1)
    return best, dist, sq


def reference_candidates(x: np.ndarray) -> list[np.ndarray]:
    """For each alpha of ``REF_ALPHAS`` that references any row: each row's reference or -1."""
    if not 2 <= x.shape[0] <= MAX_REF_ROWS:
        return []
    best, dist, sq = nearest_earlier_rows(x)
    out: dict[bytes, np.ndarray] = {}
    for alpha in REF_ALPHAS:
        refs = np.where(dist < alpha * sq, best, -1)
        if (refs >= 0).any():
            out.setdefault(refs.tobytes(), refs)
    return list(out.values())


@dataclass
class Plan:
    """What one encoding of a tensor codes, and its exact cost in bits."""

    residual: np.ndarray  # (rows, cols) int64: the coded values
    refs: np.ndarray | None  # each row's reference or -1; None: no references
    k: int = 1
    classes: np.ndarray | None = None
    tables: np.ndarray | None = None
    bits: float = float("inf")


def plan_classes(plan: Plan, max_classes: int) -> Plan:
    """The column classes of least cost for ``plan``'s residuals (one set of tables per row
    group: plain rows, then referencing rows), all side streams counted."""
    r, cols = plan.residual, plan.residual.shape[1]
    q = r - (int(r.min()) if r.size else 0)
    n = int(q.max()) + 1 if q.size else 1
    groups = [plan.refs < 0, plan.refs >= 0] if plan.refs is not None else [np.ones(r.shape[0], dtype=bool)]
    ranks = column_ranks(r)
    order = np.argsort(ranks, kind="stable")  # columns by rank: every class is a run of them
    cums = [np.vstack([np.zeros((1, n), dtype=np.int64), column_histograms(q[g], n)[order].cumsum(0)]) for g in groups]
    side = 0
    if plan.refs is not None:
        side = 8 * ((r.shape[0] + 7) // 8) + int((plan.refs >= 0).sum()) * ref_width(r.shape[0])
    for k in range(1, min(max_classes, max(cols, 1)) + 1):
        classes = ranks * k // max(cols, 1)
        bounds = -(-np.arange(k + 1) * cols // k)  # class c: the ranks with rank * k // cols == c
        tables = np.concatenate([cum[bounds[1:]] - cum[bounds[:-1]] for cum in cums])
        bits = cost_bits(tables, k, cols) + side
        if bits < plan.bits:
            plan.k, plan.classes, plan.tables, plan.bits = k, classes, tables, bits
    return plan


def column_ranks(q: np.ndarray) -> np.ndarray:
    """Each column's rank by the RMS of its values (signed: a symmetric quantizer centres them
    on zero); the classes for any ``k`` cut these ranks into ``k``
    equal groups."""
    rms = np.sqrt((q.astype(np.float64) ** 2).mean(axis=0)) if q.size else np.zeros(q.shape[1])
    ranks = np.empty(q.shape[1], dtype=np.int64)
    ranks[np.argsort(rms, kind="stable")] = np.arange(q.shape[1])
    return ranks


def column_histograms(q: np.ndarray, n: int) -> np.ndarray:
    """(cols, n): each column's counts of the values 0..n-1; a class's table is their sum."""
    cols = q.shape[1]
    return np.bincount((np.arange(cols) * n + q).reshape(-1), minlength=cols * n).reshape(cols, n)


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
    summary = "ANS with per-column context classes and reference rows (both chosen per tensor)"
    consumes, produces = SYMBOLS, BYTES
    Params = CtxParams

    def encode(self, value: np.ndarray, ctx: EncodeContext) -> Encoded:
        import constriction

        rows, cols = grid_shape(ctx.meta.shape)
        x = value.reshape(rows, cols).astype(np.int64)
        plans = [Plan(x, None)]
        for refs in reference_candidates(x) if self.params.refs else []:
            residual = x.copy()
            residual[refs >= 0] -= x[refs[refs >= 0]]
            if int(residual.max()) - int(residual.min()) < MAX_ALPHABET:
                plans.append(Plan(residual, refs))
        plan = min((plan_classes(p, self.params.max_classes) for p in plans), key=lambda p: p.bits)
        r, k, classes, tables = plan.residual, plan.k, plan.classes, plan.tables
        lo = int(r.min()) if r.size else 0
        q = r - lo
        coder = constriction.stream.stack.AnsCoder()
        models = class_models(tables)
        groups = [plan.refs < 0, plan.refs >= 0] if plan.refs is not None else [np.ones(rows, dtype=bool)]
        for g in reversed(range(len(groups))):  # a stack: the last class encoded is the first decoded
            for c in reversed(range(k)):
                if models[g * k + c] is not None:
                    coder.encode_reverse(q[groups[g]][:, classes == c].reshape(-1).astype(np.int32), models[g * k + c])
        params = {"k": k, "lo": lo, "n": int(tables.shape[1])}
        blobs = {"classes": pack_classes(classes, k), "tables": write_tables(tables)}
        if plan.refs is not None:
            params["refs"] = 1
            blobs["refs"] = pack_refs(plan.refs)
        return Encoded(coder.get_compressed().astype("<u4").tobytes(), params, blobs)
