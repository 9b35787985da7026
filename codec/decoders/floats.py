"""Passthrough floats: the tensor stored as raw little-endian fp16, bf16 or fp32 bytes."""
from __future__ import annotations

import numpy as np
import torch

from .base import FLOAT_WIDTH, DecodeError, TensorMeta, param


def decode(data: bytes, params: dict, blobs: dict, meta: TensorMeta) -> torch.Tensor:
    store = param(params, "store", str)
    if store not in FLOAT_WIDTH:
        raise DecodeError(f"unknown storage dtype '{store}'")
    width = FLOAT_WIDTH[store]
    if len(data) != width * meta.numel:
        raise DecodeError(f"{len(data)} bytes for {meta.numel} {store} elements")
    raw = np.frombuffer(data, dtype="<i2" if width == 2 else "<i4").copy()
    stored = torch.from_numpy(raw).view(getattr(torch, store))
    return stored.reshape(meta.shape).to(getattr(torch, meta.dtype))
