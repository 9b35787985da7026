"""Order-0 entropy: the bound a memoryless coder of the symbols cannot beat."""
from __future__ import annotations

import numpy as np


def order0_bits(symbols: np.ndarray) -> float:
    """Total bits of the empirical order-0 entropy of ``symbols`` (0 for one distinct value)."""
    symbols = np.asarray(symbols).reshape(-1)
    if symbols.size == 0:
        return 0.0
    if np.issubdtype(symbols.dtype, np.integer) and int(symbols.max()) - int(symbols.min()) < 1 << 20:
        wide = symbols.astype(np.int64)  # before subtracting: int8 symbols would wrap
        counts = np.bincount(wide - wide.min())
        counts = counts[counts > 0]
    else:
        _, counts = np.unique(symbols, return_counts=True)
    p = counts / symbols.size
    return float(-(counts * np.log2(p)).sum())
