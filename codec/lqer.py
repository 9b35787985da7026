"""LQER: a low-rank correction of a matrix's quantization error (format: decoders/intq.py).

Given the error ``E = W - dequant(Q)`` and the layer's input Hessian ``H = L L^T``, the loss
increase GPTQ estimates is ``tr(E H E^T) = ||E L||_F^2``. Its best rank-r reduction comes from
the SVD of ``E L``: ``B`` spans the top right singular vectors mapped back through ``L^-1``,
quantized to int8 per row; then ``A`` is the least-squares fit for the quantized ``B`` in the
same metric (``A = E H B^T (B H B^T)^-1``), also int8 per row. Without a Hessian the metric is
the plain squared error (``L = I``).

The SVD is a seeded randomized one (``torch.svd_lowrank``), so the factors are deterministic
and cheap enough for the allocator to try them on many candidate grids.
"""
from __future__ import annotations

import numpy as np
import torch

from .decoders.intq import FP16_MAX, FP16_TINY, lqer_product

OVERSAMPLE = 8
POWER_ITERATIONS = 4


def cholesky_factor(hessian: torch.Tensor | None, cols: int) -> torch.Tensor | None:
    """``L`` with ``L L^T = H`` (1 % damping, dead inputs kept finite); None without a Hessian."""
    if hessian is None:
        return None
    h = hessian.double().clone()
    h.diagonal().add_(0.01 * h.diagonal().mean() + 1e-12)
    return torch.linalg.cholesky(h)


def int8_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row absmax int8: ``(symbols, fp16 scales)``."""
    scale = (x.abs().amax(dim=1) / 127).clamp(FP16_TINY, FP16_MAX).to(torch.float16)
    return torch.clamp(torch.round(x / scale.double()[:, None]), -127, 127).to(torch.int8), scale


def lqer_factors(err: torch.Tensor, chol: torch.Tensor | None, rank: int) -> tuple[torch.Tensor, ...]:
    """``(A int8, A scales, B int8, B scales)`` correcting ``err`` (rows x cols) at ``rank``."""
    e = err.double()
    m = e @ chol if chol is not None else e
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        _, _, v = torch.svd_lowrank(m, q=min(rank + OVERSAMPLE, *m.shape), niter=POWER_ITERATIONS)
    bt = v[:, :rank]  # (cols, rank): directions in the metric's coordinates
    if chol is not None:
        bt = torch.linalg.solve_triangular(chol.T, bt, upper=True)  # B = V^T L^-1
    bq, bs = int8_rows(bt.T)
    b = bq.double() * bs.double()[:, None]
    h = chol @ chol.T if chol is not None else None
    bh = b @ h if h is not None else b
    gram = bh @ b.T
    gram.diagonal().add_(1e-9 * (1 + gram.diagonal().mean()))
    a = torch.linalg.solve(gram, (e @ bh.T).T).T  # (rows, rank)
    aq, as_ = int8_rows(a)
    return aq, as_, bq, bs


def lqer_blob(factors: tuple[torch.Tensor, ...]) -> bytes:
    aq, as_, bq, bs = factors
    return b"".join([aq.numpy().astype(np.int8).tobytes(), bq.numpy().astype(np.int8).tobytes(),
                     as_.numpy().astype("<f2").tobytes(), bs.numpy().astype("<f2").tobytes()])


def correction(factors: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The float32 ``A @ B`` the decoder adds."""
    return lqer_product(*factors)
