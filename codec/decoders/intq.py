"""Per-row symmetric integer dequantization: ``w[r, :] = q[r, :] * scale[r]`` (fp16 scales).

This is the one definition of dequantization; the encoders and fake quantization import it.
"""
from __future__ import annotations

import numpy as np
import torch

from .base import DecodeError, TensorMeta, blob, param


def rows_of(shape: tuple[int, ...]) -> int:
    """Matrices quantize per output row; vectors and scalars as a single row."""
    return shape[0] if len(shape) >= 2 else 1


def dequantize(q: torch.Tensor, scales: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    rows = rows_of(shape)
    w = q.reshape(rows, -1).to(torch.float32) * scales.to(torch.float32).reshape(rows, 1)
    return w.reshape(shape).to(dtype)


def decode(symbols: np.ndarray, params: dict, blobs: dict, meta: TensorMeta) -> torch.Tensor:
    bits = param(params, "bits", int, 2, 8)
    qmax = (1 << (bits - 1)) - 1
    if symbols.size != meta.numel:
        raise DecodeError(f"{symbols.size} symbols for {meta.numel} elements")
    if symbols.size and (symbols.min() < -qmax or symbols.max() > qmax):
        raise DecodeError(f"symbol outside the {bits}-bit range ±{qmax}")
    raw = blob(blobs, "scales")
    rows = rows_of(meta.shape)
    if len(raw) != 2 * rows:
        raise DecodeError(f"scales stream has {len(raw)} bytes, expected {2 * rows}")
    scales = torch.from_numpy(np.frombuffer(raw, dtype="<f2").astype(np.float16))
    if not torch.isfinite(scales).all():
        raise DecodeError("non-finite scale")
    q = torch.from_numpy(symbols.astype(np.int32, copy=False))
    return dequantize(q, scales, meta.shape, getattr(torch, meta.dtype))
