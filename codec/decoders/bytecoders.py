"""General-purpose byte decompressors, each stopped at the size its manifest entry declares."""
from __future__ import annotations

import lzma

from .base import DecodeError, TensorMeta, param

CHUNK = 1 << 20


def _checked(out: bytes, size: int, leftover: bool) -> bytes:
    if len(out) != size or leftover:
        raise DecodeError(f"decompressed to {len(out)}{'+' if leftover else ''} bytes, expected {size}")
    return out


def _size(params: dict, meta: TensorMeta) -> int:
    return param(params, "size", int, 0, meta.max_bytes)


def decode_zstd(data: bytes, params: dict, blobs: dict, meta: TensorMeta) -> bytes:
    import zstandard

    size = _size(params, meta)
    chunks, total = [], 0
    try:
        with zstandard.ZstdDecompressor().stream_reader(data) as reader:
            while total <= size:
                chunk = reader.read(min(CHUNK, size + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
    except zstandard.ZstdError as e:
        raise DecodeError(f"zstd: {e}") from None
    return _checked(b"".join(chunks), size, False)


def brotli_bounded(data: bytes, limit: int) -> bytes:
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


def decode_brotli(data: bytes, params: dict, blobs: dict, meta: TensorMeta) -> bytes:
    size = _size(params, meta)
    return _checked(brotli_bounded(data, size), size, False)


def decode_lzma(data: bytes, params: dict, blobs: dict, meta: TensorMeta) -> bytes:
    size = _size(params, meta)
    d = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
    try:
        out = d.decompress(data, max_length=size + 1)
    except lzma.LZMAError as e:
        raise DecodeError(f"lzma: {e}") from None
    return _checked(out, size, not d.eof or bool(d.unused_data))
