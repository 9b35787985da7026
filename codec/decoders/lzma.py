"""Decompress a raw LZMA2 stream (no container header), stopped at the declared size."""
from __future__ import annotations

import lzma

from .base import DecodeError, TensorMeta, exact_size, param

FILTERS = [{"id": lzma.FILTER_LZMA2}]


def decode(data: bytes, params: dict, blobs: dict, meta: TensorMeta) -> bytes:
    size = param(params, "size", int, 0, meta.max_bytes)
    d = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=FILTERS)
    try:
        out = d.decompress(data, max_length=size + 1)
    except lzma.LZMAError as e:
        raise DecodeError(f"lzma: {e}") from None
    return exact_size(out, size, not d.eof or bool(d.unused_data))
