"""ANS with per-column contexts (format: decoders/ctxans.py).

Columns are ranked by the root mean square of their symbols and cut into ``k`` classes of
equal size (quantiles); ``k`` is chosen per tensor, from 1 to ``max_classes``, by the exact
cost it will have: the classes' order-0 bits, their tables and the class ids. ``k = 1`` is
the plain per-tensor model, so this stage never costs more than ``ans`` by more than a few
bytes of header.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..decoders.ans import categorical
from ..decoders.base import BYTES, SYMBOLS
from ..decoders.ctxans import MAX_CLASSES, class_bits, pack_classes, write_tables
from ..decoders.intq import grid_shape
from ..stage import EncodeContext, Encoded, Stage


@dataclass
class CtxParams:
    max_classes: int = 8

    def __post_init__(self) -> None:
        if not 1 <= self.max_classes <= MAX_CLASSES:
            raise ValueError(f"max_classes must be in 1..{MAX_CLASSES}, got {self.max_classes}")


def column_ranks(q: np.ndarray) -> np.ndarray:
    """Each column's rank by symbol RMS (of the signed symbols, which a symmetric quantizer
    centres on zero); the classes for any ``k`` cut these ranks into ``k`` equal groups."""
    rms = np.sqrt((q.astype(np.float64) ** 2).mean(axis=0)) if q.size else np.zeros(q.shape[1])
    ranks = np.empty(q.shape[1], dtype=np.int64)
    ranks[np.argsort(rms, kind="stable")] = np.arange(q.shape[1])
    return ranks


def tables_for(q: np.ndarray, classes: np.ndarray, k: int, n: int) -> np.ndarray:
    return np.stack([np.bincount(q[:, classes == c].reshape(-1), minlength=n) for c in range(k)])


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
    summary = "ANS with per-column context classes (k chosen per tensor)"
    consumes, produces = SYMBOLS, BYTES
    Params = CtxParams

    def encode(self, value: np.ndarray, ctx: EncodeContext) -> Encoded:
        import constriction

        rows, cols = grid_shape(ctx.meta.shape)
        flat = value.reshape(-1).astype(np.int64)
        lo = int(flat.min()) if flat.size else 0
        q = (flat - lo).reshape(rows, cols)
        n = int(q.max()) + 1 if q.size else 1
        choices = []
        ranks = column_ranks(flat.reshape(rows, cols))
        for k in range(1, min(self.params.max_classes, max(cols, 1)) + 1):
            classes = ranks * k // max(cols, 1)
            tables = tables_for(q, classes, k, n)
            choices.append((cost_bits(tables, k, cols), k, classes, tables))
        _, k, classes, tables = min(choices, key=lambda c: (c[0], c[1]))
        coder = constriction.stream.stack.AnsCoder()
        for c in reversed(range(k)):  # a stack: the last class encoded is the first decoded
            symbols = q[:, classes == c].reshape(-1).astype(np.int32)
            if np.count_nonzero(tables[c]) > 1:
                coder.encode_reverse(symbols, categorical(tables[c]))
        return Encoded(coder.get_compressed().astype("<u4").tobytes(), {"k": k, "lo": lo, "n": n},
                       {"classes": pack_classes(classes, k), "tables": write_tables(tables)})
