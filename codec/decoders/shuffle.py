"""Byte shuffle: byte k of every ``width``-byte element grouped together (helps LZ coders)."""
from __future__ import annotations

import numpy as np

from .base import DecodeError, TensorMeta, param


def decode(data: bytes, params: dict, blobs: dict, meta: TensorMeta) -> bytes:
    width = param(params, "width", int, 1, 8)
    if len(data) % width:
        raise DecodeError(f"{len(data)} bytes is not a multiple of width {width}")
    return np.frombuffer(data, dtype=np.uint8).reshape(width, -1).T.tobytes()
