"""Quantizer stages: float tensor -> integer symbols + fp16 per-row scales (format: decoders/intq)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from ..decoders.base import SYMBOLS, TENSOR
from ..decoders.grid import ClipRule, row_scales
from ..decoders.intq import MAX_LQER_RANK, dequantize, grid_shape, qmax
from ..gptq import gptq_quantize
from ..lqer import lqer_blob, lqer_factors
from ..rdoq import quantize_rdoq
from ..stage import EncodeContext, Encoded, Stage, StageError


@dataclass
class QuantParams:
    bits: int = 6
    clip: str = "absmax"
    rdoq: float = 0.0  # rate-aware rounding: squared error (in grid steps) a coded bit is worth (codec/rdoq.py)
    lqer: int = 0  # rank of the low-rank error correction (codec/lqer.py); 0 for none
    colscale: float = 0.0  # column steps ~ H_jj^(-colscale/2) (column_scales); 0: one step per row
    rowstep: float = 0.0  # row steps ~ (the row's predicted error)^(-rowstep/2) (row_steps); 0: the rule's

    def __post_init__(self) -> None:
        qmax(self.bits)
        self.rule = ClipRule.parse(self.clip)
        for name in ("colscale", "rowstep"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in 0..1, got {getattr(self, name)}")
        if not 0.0 <= self.rdoq <= 10.0:
            raise ValueError(f"rdoq must be in 0..10, got {self.rdoq}")
        if not 0 <= self.lqer <= MAX_LQER_RANK:
            raise ValueError(f"lqer must be in 0..{MAX_LQER_RANK}, got {self.lqer}")


# Column scales stay within fp16's normal range, and a dead input (H_jj = 0) gets the coarsest step.
COL_SCALE_RANGE = 2.0**12
DEAD_INPUT = 1e-6  # H_jj below this fraction of the mean counts as this fraction


def column_scales(hdiag: torch.Tensor, power: float) -> torch.Tensor:
    """fp16 column scales ``(H_jj / G)^(-power/2)`` (``G``: the geometric mean of the diagonal).

    Why this shape: the error a column's step ``s_j`` leaves costs about ``H_jj s_j^2``, and
    its entropy-coded rate falls as ``log2 s_j``; the least total cost at a given rate has
    ``H_jj s_j^2`` equal across columns (``power`` 1). The row's clip rule then works on the
    scaled matrix ``W / col``. ``power`` 1 lets a column's own spread push the row's scale
    (a column driven 60x harder is stored 60x larger); 0.5 goes half the way (measured better
    on a small GPT's embedding, docs/benchmarks.md). Dividing by ``G`` keeps the scaled
    matrix's magnitude near the original's, so the clip rules keep their meaning."""
    d = hdiag.double().clamp_min(0.0)
    mean = float(d.mean()) if d.numel() else 0.0
    d = d.clamp_min(DEAD_INPUT * mean if mean > 0 else 1.0)
    c = (d / d.log().mean().exp()).pow(-power / 2.0).clamp(1.0 / COL_SCALE_RANGE, COL_SCALE_RANGE)
    return c.to(torch.float16)


def scale_columns(w: torch.Tensor, hdiag: torch.Tensor | None, power: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(W / col, col)``: what the grid then codes, and the column scales (``power`` 0: ``(w, None)``)."""
    if not power:
        return w, None
    cols = column_scales(hdiag, power)
    return w.float() / cols.float()[None, :], cols


ROW_STEP_RANGE = 8.0  # a row's step is at most this many times its rule's


def row_steps(w: torch.Tensor, sens: torch.Tensor, bits: int, rule: ClipRule, power: float) -> torch.Tensor:
    """Per-row multipliers of the rule's steps, ``(u_r / u_max)^(-power/2)``: ``u_r`` the row's
    predicted loss rise per unit of squared step (``sum_j S_rj`` times its rule step squared,
    ``S``: the loss's sensitivity to each weight of ``w``), ``u_max`` the largest.

    Why: a row's error at step ``s_r`` costs about ``s_r^2 sum_j S_rj / 12`` and its coded
    rate falls as ``log2 s_r``; the least total cost at a given rate makes ``S_r s_r^2`` equal
    across rows (``power`` 1), the reverse water-filling of rate-distortion theory. A clip rule
    sets each row's step by its own spread alone: a dead neuron's row, an embedding row of a
    rare token or a query row the loss barely sees gets the step of the row that matters most.
    The row that costs most keeps its rule's step, the others get coarser ones, at most
    ``ROW_STEP_RANGE`` times (so no row is clipped narrower than its rule says; the fill's bits
    and clip set the level); a row no sensitivity reached counts as a millionth of the mean.
    The decoder needs nothing: the steps are in the fp16 row scales it reads anyway."""
    base = row_scales(w, bits, rule).double()
    if not base.numel():
        return torch.ones(0)
    u = sens.double().reshape(base.shape[0], -1).sum(1) * base.square()
    mean = float(u.mean())
    u = u.clamp_min(DEAD_INPUT * mean if mean > 0 else 1.0)
    return (u / u.max()).pow(-power / 2.0).clamp(1.0, ROW_STEP_RANGE).float()


def scaled_row_steps(scaled: torch.Tensor, sens: torch.Tensor | None, cols: torch.Tensor | None, bits: int,
                     rule: ClipRule, power: float) -> torch.Tensor | None:
    """:func:`row_steps` of the matrix the grid codes (``W / col``: an error there costs
    ``S col^2``), or None at ``power`` 0."""
    if not power:
        return None
    sens = sens.reshape(grid_shape(tuple(scaled.shape))).float()
    if cols is not None:
        sens = sens * cols.float().square()[None, :]
    return row_steps(scaled, sens, bits, rule, power)


class _Quantizer(Stage):
    """Shared hand-off of the quantizers: int symbols, flat, plus fp16 row scales (and, with
    ``colscale``, fp16 column scales: the symbols then code ``W / col``, with the Hessian of
    the scaled inputs ``col H col``)."""

    consumes, produces = TENSOR, SYMBOLS

    @property
    def needs_calibration(self) -> bool:  # column scales come from the Hessian's diagonal
        return self.params.colscale > 0

    def encode(self, value: torch.Tensor, ctx: EncodeContext) -> Encoded:
        params, blobs = {"bits": self.params.bits}, {}
        hdiag = torch.diagonal(ctx.hessian) if ctx.hessian is not None else None  # of the inputs as they are
        if self.params.colscale and (value.ndim != 2 or hdiag is None or hdiag.numel() != value.shape[1]):
            raise StageError(f"{self.name}: colscale needs a matrix and its inputs' calibration statistics; "
                             f"'{ctx.meta.name}' is {list(value.shape)}"
                             + (" without them (give --calib)" if hdiag is None else ""))
        if self.params.rowstep and (ctx.sensitivity is None or ctx.sensitivity.numel() != value.numel()):
            raise StageError(f"{self.name}: rowstep needs the loss's sensitivity to each weight of "
                             f"'{ctx.meta.name}' (the fill passes it; calibrate with sensitivity tokens)")
        scaled, cols = scale_columns(value, hdiag, self.params.colscale)
        if cols is not None:
            c = cols.float()
            ctx = dataclasses.replace(ctx, hessian=ctx.hessian.float() * c[:, None] * c[None, :])
            params["cols"], blobs["cols"] = 1, cols.numpy().astype("<f2").tobytes()
        steps = scaled_row_steps(scaled, ctx.sensitivity, cols, self.params.bits, self.params.rule, self.params.rowstep)
        q, scales = self.quantize(scaled, ctx, steps)
        blobs["scales"] = scales.numpy().astype("<f2").tobytes()
        rank = self.params.lqer
        if rank:
            if value.ndim != 2 or rank > min(value.shape):
                raise StageError(f"{self.name}: lqer={rank} needs a matrix with both sides >= {rank}; "
                                 f"'{ctx.meta.name}' is {list(value.shape)}")
            err = value.float() - dequantize(q, scales, tuple(value.shape), torch.float32, cols)
            factors = lqer_factors(err, hdiag, rank)
            params["lqer"], blobs["lqer"] = rank, lqer_blob(factors)
        return Encoded(q.reshape(-1).numpy().astype(np.int32), params, blobs)

    def quantize(self, value: torch.Tensor, ctx: EncodeContext,
                 steps: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class RTN(_Quantizer):
    name = "rtn"
    summary = "round-to-nearest per-row symmetric integers"
    Params = QuantParams

    def quantize(self, value: torch.Tensor, ctx: EncodeContext,
                 steps: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return quantize_rdoq(value, self.params.bits, self.params.rule, self.params.rdoq, steps)


@dataclass
class GPTQParams(QuantParams):
    damp: float = 0.01  # fraction of the mean Hessian diagonal added to the diagonal
    block: int = 128  # columns updated together
    act_order: bool = True  # quantize columns by decreasing Hessian diagonal

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.damp >= 0 and self.block >= 1):
            raise ValueError(f"damp must be >= 0 and block >= 1, got damp={self.damp} block={self.block}")


class GPTQ(_Quantizer):
    name = "gptq"
    summary = "GPTQ per-row symmetric integers (needs calibration Hessians)"
    Params = GPTQParams
    needs_calibration = True

    def quantize(self, value: torch.Tensor, ctx: EncodeContext,
                 steps: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if value.ndim != 2:
            raise StageError(f"gptq: '{ctx.meta.name}' is not a matrix; use rtn for it")
        if ctx.hessian is None:
            raise StageError(f"gptq: no calibration statistics for '{ctx.meta.name}' "
                             "(give calibration shards with --calib, or use rtn)")
        return gptq_quantize(value, ctx.hessian, self.params, steps)
