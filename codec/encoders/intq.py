"""Quantizer stages: float tensor -> integer symbols + fp16 per-row scales (format: decoders/intq)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..decoders.base import SYMBOLS, TENSOR
from ..decoders.intq import MAX_LQER_RANK, ClipRule, dequantize, qmax
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

    def __post_init__(self) -> None:
        qmax(self.bits)
        self.rule = ClipRule.parse(self.clip)
        if not 0.0 <= self.rdoq <= 10.0:
            raise ValueError(f"rdoq must be in 0..10, got {self.rdoq}")
        if not 0 <= self.lqer <= MAX_LQER_RANK:
            raise ValueError(f"lqer must be in 0..{MAX_LQER_RANK}, got {self.lqer}")


class _Quantizer(Stage):
    """Shared hand-off of the quantizers: int symbols, flat, plus fp16 row scales."""

    consumes, produces = TENSOR, SYMBOLS

    def encode(self, value: torch.Tensor, ctx: EncodeContext) -> Encoded:
        q, scales = self.quantize(value, ctx)
        params, blobs = {"bits": self.params.bits}, {"scales": scales.numpy().astype("<f2").tobytes()}
        rank = self.params.lqer
        if rank:
            if value.ndim != 2 or rank > min(value.shape):
                raise StageError(f"{self.name}: lqer={rank} needs a matrix with both sides >= {rank}; "
                                 f"'{ctx.meta.name}' is {list(value.shape)}")
            err = value.float() - dequantize(q, scales, tuple(value.shape), torch.float32)
            hdiag = torch.diagonal(ctx.hessian) if ctx.hessian is not None else None
            factors = lqer_factors(err, hdiag, rank)
            params["lqer"], blobs["lqer"] = rank, lqer_blob(factors)
        return Encoded(q.reshape(-1).numpy().astype(np.int32), params, blobs)

    def quantize(self, value: torch.Tensor, ctx: EncodeContext) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class RTN(_Quantizer):
    name = "rtn"
    summary = "round-to-nearest per-row symmetric integers"
    Params = QuantParams

    def quantize(self, value: torch.Tensor, ctx: EncodeContext) -> tuple[torch.Tensor, torch.Tensor]:
        return quantize_rdoq(value, self.params.bits, self.params.rule, self.params.rdoq)


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

    def quantize(self, value: torch.Tensor, ctx: EncodeContext) -> tuple[torch.Tensor, torch.Tensor]:
        if value.ndim != 2:
            raise StageError(f"gptq: '{ctx.meta.name}' is not a matrix; use rtn for it")
        if ctx.hessian is None:
            raise StageError(f"gptq: no calibration statistics for '{ctx.meta.name}' "
                             "(give calibration shards with --calib, or use rtn)")
        return gptq_quantize(value, ctx.hessian, self.params)
