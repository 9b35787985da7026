"""Passthrough stages: keep a (small or control) tensor as raw fp16, bf16 or fp32 bytes, or
exactly as it is (``raw``: its own dtype, so a model's integer and bool buffers round-trip)."""
from __future__ import annotations

from typing import ClassVar

import torch

from ..decoders.base import BYTES, TENSOR
from ..stage import EncodeContext, Encoded, Stage


class _Float(Stage):
    consumes, produces = TENSOR, BYTES
    store: ClassVar[str]

    def stored(self, value: torch.Tensor) -> str:
        return self.store

    def encode(self, value: torch.Tensor, ctx: EncodeContext) -> Encoded:
        store = self.stored(value)
        t = value.detach().to(getattr(torch, store)).contiguous().reshape(-1)
        raw = (t.view(torch.int16) if store == "bfloat16" else t).numpy()
        return Encoded(raw.astype(raw.dtype.newbyteorder("<")).tobytes(), {"store": store})


class FP16(_Float):
    name, store = "fp16", "float16"
    summary = "raw fp16 bytes"


class BF16(_Float):
    name, store = "bf16", "bfloat16"
    summary = "raw bf16 bytes"


class FP32(_Float):
    name, store = "fp32", "float32"
    summary = "raw fp32 bytes (lossless for fp32 tensors)"


class Raw(_Float):
    name = "raw"
    summary = "the tensor's own bytes, any dtype (lossless: integer and bool buffers too)"
    any_dtype = True

    def stored(self, value: torch.Tensor) -> str:
        return str(value.dtype).removeprefix("torch.")
