"""Rate-aware rounding (RDOQ, as in DeepCABAC and MPEG NNR): round each weight to whichever
neighbouring grid point minimises ``(x - q)^2 + lam * bits(q)``, instead of the nearest one.

``x`` is the weight in grid steps (``w / scale``), so ``lam`` is dimensionless: the squared
error, in steps, one coded bit is worth. ``bits(q)`` is the symbol's code length under the
tensor's own order-0 model (the histogram of its round-to-nearest symbols, what ``ans`` and
``ctxans`` then code). A weight near the midpoint between two grid points costs almost the
same error either way, so it goes to the more frequent (cheaper) one; ``lam = 0`` is
round-to-nearest exactly. The format does not change: only which symbols are written.
"""
from __future__ import annotations

import numpy as np
import torch

from .decoders.grid import ClipRule, as_rows, quantize_rtn, round_to_grid, row_scales

from .decoders.intq import qmax


def code_lengths(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Bits of each symbol ``-m..m`` (index ``q + m``) under the order-0 model of ``q``; a
    half count for unseen symbols keeps every length finite."""
    m = qmax(bits)
    counts = np.bincount(q.reshape(-1).numpy().astype(np.int64) + m, minlength=2 * m + 1) + 0.5
    return torch.from_numpy(-np.log2(counts / counts.sum())).float()


def rate_aware_round(x: torch.Tensor, bits: int, lengths: torch.Tensor, lam: float) -> torch.Tensor:
    """int8 symbols for ``x`` (in grid steps): the floor or ceiling neighbour, clamped to the
    grid, whichever has the smaller ``(x - q)^2 + lam * lengths[q + m]``."""
    m = qmax(bits)
    down = torch.floor(x)
    lo, hi = down.clamp(-m, m), (down + 1).clamp(-m, m)  # beyond the grid both are its edge
    cost_lo = (x - lo).square() + lam * lengths[(lo + m).long()]
    cost_hi = (x - hi).square() + lam * lengths[(hi + m).long()]
    return torch.where(cost_hi < cost_lo, hi, lo).to(torch.int8)


def quantize_rdoq(w: torch.Tensor, bits: int, rule: ClipRule, lam: float,
                  steps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Round-to-nearest's grid (same scales, ``steps``: per-row multipliers) with rate-aware
    rounding: ``(symbols, scales)``; ``lam = 0`` is ``quantize_rtn`` itself."""
    if not lam:
        return quantize_rtn(w, bits, rule, steps)
    scales = row_scales(w, bits, rule, steps)
    rows = as_rows(w)
    lengths = code_lengths(round_to_grid(rows, scales[:, None], bits), bits)
    return rate_aware_round(rows / scales.float()[:, None], bits, lengths, lam), scales
