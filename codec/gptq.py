"""GPTQ (Frantar et al., 2022): quantize a weight matrix column by column, pushing each
column's rounding error onto the columns not yet quantized, weighted by the inverse Hessian
of the layer's reconstruction loss ``H = 2 X^T X`` (X: the layer's calibration inputs).

Scales are fixed per row up front by the same rule as round-to-nearest
(``decoders/grid.py: row_scales`` on the original weights), so the stored format is identical
and only the symbols differ.
"""
from __future__ import annotations

from typing import Protocol

import torch

from .decoders.grid import ClipRule, as_rows, round_to_grid, row_scales
from .rdoq import code_lengths, rate_aware_round
from .threads import one_thread


class GPTQSettings(Protocol):
    """What GPTQ reads of a stage's parameters (``encoders/intq.py: GPTQParams`` has them), named
    here so the algorithm does not import the stage that calls it."""

    bits: int
    rule: ClipRule
    damp: float
    act_order: bool
    block: int
    rdoq: float


@one_thread
def gptq_quantize(w: torch.Tensor, hessian: torch.Tensor, cfg: GPTQSettings,
                  steps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(symbols[rows, cols] int8, scales[rows] fp16)`` for a 2-D ``w`` and its ``[cols, cols]`` Hessian.

    float32 throughout, on one thread (``threads.py``), in the order of operations of the
    Parameter Golf records' ``gptq_quantize_weight``, so that with ``clip=sdclip:K`` and ``act_order`` the symbols and
    scales are theirs bit for bit (tests/test_records_compat.py).

    With ``cfg.rdoq > 0`` each column is rounded rate-aware (``codec/rdoq.py``) under the code
    lengths of the tensor's round-to-nearest symbols; GPTQ's update then pushes that rounding's
    error, like any other, onto the columns not yet quantized. ``steps``: per-row multipliers
    of the rule's scales (``row_scales``)."""
    W = as_rows(w).float().clone()
    rows, cols = W.shape
    if hessian.shape != (cols, cols):
        raise ValueError(f"Hessian shape {tuple(hessian.shape)} does not match {cols} input columns")
    scales = row_scales(w, cfg.bits, cfg.rule, steps)
    sf = scales.float()
    H = hessian.detach().float().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    H.diagonal().add_(cfg.damp * H.diag().mean())
    perm = torch.argsort(H.diag(), descending=True, stable=True) if cfg.act_order else torch.arange(cols)
    W[:, dead] = 0.0
    W, H = W[:, perm], H[perm][:, perm]
    try:
        Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    except RuntimeError as e:  # not positive definite even after damping
        raise ValueError(f"GPTQ: Hessian is not positive definite ({e}); raise damp") from None
    lengths = code_lengths(round_to_grid(W, scales[:, None], cfg.bits), cfg.bits) if cfg.rdoq else None
    Q = torch.zeros(rows, cols, dtype=torch.int8)
    for i1 in range(0, cols, cfg.block):
        i2 = min(i1 + cfg.block, cols)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        Err1 = torch.zeros(rows, i2 - i1)
        for i in range(i2 - i1):
            col = W1[:, i]
            q = round_to_grid(col, scales, cfg.bits) if lengths is None else \
                rate_aware_round(col / sf, cfg.bits, lengths, cfg.rdoq)
            Q[:, i1 + i] = q
            err = (col - q.float() * sf) / Hinv1[i, i]
            Err1[:, i] = err
            W1[:, i:] -= err.unsqueeze(1) * Hinv1[i, i:].unsqueeze(0)
        if i2 < cols:
            W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return Q[:, torch.argsort(perm)], scales
