"""Integer symbols <-> little-endian int8/int16 bytes, the hand-off to byte compressors."""
from __future__ import annotations

import numpy as np

from .base import DecodeError, TensorMeta, param

DTYPE = {1: "<i1", 2: "<i2"}


def decode(data: bytes, params: dict, blobs: dict, meta: TensorMeta) -> np.ndarray:
    width = param(params, "width", int, 1, 2)
    if len(data) != width * meta.numel:
        raise DecodeError(f"{len(data)} bytes for {meta.numel} int{8 * width} symbols")
    return np.frombuffer(data, dtype=DTYPE[width]).astype(np.int32)
