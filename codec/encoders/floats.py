"""Passthrough stages: keep a (small or control) tensor as raw fp16, bf16 or fp32 bytes."""
from __future__ import annotations

import torch

from ..decoders.base import BYTES, TENSOR
from ..stage import EncodeContext, Encoded, Stage


class _Float(Stage):
    consumes, produces = TENSOR, BYTES
    store: str

    def encode(self, value: torch.Tensor, ctx: EncodeContext) -> Encoded:
        t = value.detach().to(getattr(torch, self.store)).contiguous().reshape(-1)
        raw = t.view(torch.int16 if t.element_size() == 2 else torch.int32).numpy()
        return Encoded(raw.astype(raw.dtype.newbyteorder("<")).tobytes(), {"store": self.store})


class FP16(_Float):
    name, store, summary = "fp16", "float16", "raw fp16 bytes"


class BF16(_Float):
    name, store, summary = "bf16", "bfloat16", "raw bf16 bytes"


class FP32(_Float):
    name, store, summary = "fp32", "float32", "raw fp32 bytes (lossless for fp32 tensors)"
