"""Passthrough: the tensor stored as raw little-endian bytes, as fp16, bf16 or fp32, or in its
own dtype, any of ``DTYPES`` (``raw``: exact, integer and bool buffers included)."""
from __future__ import annotations

import numpy as np
import torch

from .base import DTYPE_WIDTH, FLOAT_WIDTH, DecodeError, TensorMeta, param

# numpy reads every stored dtype by its own name but these: bf16 as its int16 bits, bool as bytes 0 or 1.
READ_AS = {"bfloat16": "int16", "bool": "uint8"}


def decode(data: bytes, params: dict, blobs: dict, meta: TensorMeta) -> torch.Tensor:
    store = param(params, "store", str)
    if store not in DTYPE_WIDTH:
        raise DecodeError(f"unknown storage dtype '{store}'")
    if store != meta.dtype and not (store in FLOAT_WIDTH and meta.dtype in FLOAT_WIDTH):
        raise DecodeError(f"a {meta.dtype} tensor stored as {store}: only floats convert")
    if len(data) != DTYPE_WIDTH[store] * meta.numel:
        raise DecodeError(f"{len(data)} bytes for {meta.numel} {store} elements")
    raw = np.frombuffer(data, dtype=np.dtype(READ_AS.get(store, store)).newbyteorder("<")).copy()
    if store == "bool":
        if raw.size and int(raw.max()) > 1:
            raise DecodeError("bool elements must be the bytes 0 or 1")
        raw = raw.astype(np.bool_)
    stored = torch.from_numpy(raw)
    if store == "bfloat16":
        stored = stored.view(torch.bfloat16)
    return stored.reshape(meta.shape).to(getattr(torch, meta.dtype))
