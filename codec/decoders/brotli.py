"""brotli-decompress a byte stream, stopped at the size its manifest entry declares. The
container's own manifest is inflated by the same bounded function."""
from __future__ import annotations

from .base import DecodeError, TensorMeta, exact_size, param


def bounded(data: bytes, limit: int) -> bytes:
    """Inflate a complete brotli stream, never producing more than ``limit + 1`` bytes."""
    import brotli

    d = brotli.Decompressor()
    try:
        out = d.process(data, output_buffer_limit=limit + 1)
        finished = d.is_finished()
    except brotli.error as e:
        raise DecodeError(f"brotli: {e}") from None
    if len(out) > limit or not finished:
        raise DecodeError(f"brotli: truncated stream or more than {limit} bytes")
    return out


def decode(data: bytes, params: dict, blobs: dict, meta: TensorMeta) -> bytes:
    size = param(params, "size", int, 0, meta.max_bytes)
    return exact_size(bounded(data, size), size)
