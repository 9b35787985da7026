"""Quantizer stages: float tensor -> integer symbols + fp16 per-row scales."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..decoders.base import SYMBOLS, TENSOR
from ..gptq import GPTQConfig, gptq_quantize
from ..quant import ClipRule, qmax, quantize_rtn
from ..stage import EncodeContext, Encoded, Stage, StageError

DECODER = "golfpack.codec.decoders.intq:decode"


@dataclass
class QuantParams:
    bits: int = 6
    clip: str = "absmax"

    def __post_init__(self) -> None:
        qmax(self.bits)
        self.rule = ClipRule.parse(self.clip)


def _encoded(q: torch.Tensor, scales: torch.Tensor, bits: int) -> Encoded:
    return Encoded(q.reshape(-1).numpy().astype(np.int32), {"bits": bits},
                   {"scales": scales.numpy().astype("<f2").tobytes()})


class RTN(Stage):
    name = "rtn"
    summary = "round-to-nearest per-row symmetric integers"
    consumes, produces, decoder = TENSOR, SYMBOLS, DECODER
    Params = QuantParams

    def encode(self, value: torch.Tensor, ctx: EncodeContext) -> Encoded:
        q, scales = quantize_rtn(value, self.params.bits, self.params.rule)
        return _encoded(q, scales, self.params.bits)


@dataclass
class GPTQParams(QuantParams):
    damp: float = 0.01
    block: int = 128
    act_order: bool = True


class GPTQ(Stage):
    name = "gptq"
    summary = "GPTQ per-row symmetric integers (needs calibration Hessians)"
    consumes, produces, decoder = TENSOR, SYMBOLS, DECODER
    Params = GPTQParams

    def encode(self, value: torch.Tensor, ctx: EncodeContext) -> Encoded:
        if value.ndim != 2:
            raise StageError(f"gptq: '{ctx.meta.name}' is not a matrix; use rtn for it")
        if ctx.hessian is None:
            raise StageError(f"gptq: no calibration statistics for '{ctx.meta.name}' "
                             "(give calibration shards with --calib, or use rtn)")
        p = self.params
        cfg = GPTQConfig(p.bits, p.rule, p.damp, p.block, p.act_order)
        q, scales = gptq_quantize(value, ctx.hessian, cfg)
        return _encoded(q, scales, p.bits)
