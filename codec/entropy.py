"""Order-0 entropy: the bound a memoryless coder of the symbols cannot beat."""
from __future__ import annotations

import numpy as np


def order0_bits(symbols: np.ndarray) -> float:
    """Total bits of the empirical order-0 entropy of ``symbols`` (0 for one distinct value)."""
    if symbols.size == 0:
        return 0.0
    _, counts = np.unique(symbols, return_counts=True)
    p = counts / symbols.size
    return float(-(counts * np.log2(p)).sum())
