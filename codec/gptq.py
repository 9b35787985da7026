"""GPTQ (Frantar et al., 2022): quantize a weight matrix column by column, pushing each
column's rounding error onto the columns not yet quantized, weighted by the inverse Hessian
of the layer's reconstruction loss ``H = 2 X^T X`` (X: the layer's calibration inputs).

Scales are fixed per row up front by the same rule as round-to-nearest (``quant.row_scales``
on the original weights), so the stored format is identical and only the symbols differ.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .decoders.intq import as_rows, round_to_grid, row_scales

if TYPE_CHECKING:
    from .encoders.intq import GPTQParams


def gptq_quantize(w: torch.Tensor, hessian: torch.Tensor, cfg: "GPTQParams") -> tuple[torch.Tensor, torch.Tensor]:
    """``(symbols[rows, cols] int8, scales[rows] fp16)`` for a 2-D ``w`` and its ``[cols, cols]`` Hessian."""
    W = as_rows(w).double().clone()
    rows, cols = W.shape
    if hessian.shape != (cols, cols):
        raise ValueError(f"Hessian shape {tuple(hessian.shape)} does not match {cols} input columns")
    scales = row_scales(w, cfg.bits, cfg.rule)
    s = scales.double()[:, None]
    H = hessian.detach().double().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    perm = torch.argsort(torch.diag(H), descending=True, stable=True) if cfg.act_order else torch.arange(cols)
    W, H = W[:, perm], H[perm][:, perm]
    H += cfg.damp * torch.mean(torch.diag(H)) * torch.eye(cols, dtype=H.dtype)
    try:
        Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    except RuntimeError as e:  # not positive definite even after damping
        raise ValueError(f"GPTQ: Hessian is not positive definite ({e}); raise damp") from None
    Q = torch.zeros(rows, cols, dtype=torch.int8)
    for i1 in range(0, cols, cfg.block):
        i2 = min(i1 + cfg.block, cols)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            col = W1[:, i : i + 1]
            q = round_to_grid(col.float(), scales.float()[:, None], cfg.bits)
            Q[:, i1 + i] = q[:, 0]
            err = (col - q.double() * s) / Hinv1[i, i]
            W1[:, i:] -= err @ Hinv1[i : i + 1, i:]
            Err1[:, i : i + 1] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return Q[:, torch.argsort(perm)], scales
