"""zstd-decompress a byte stream, stopped at the size its manifest entry declares."""
from __future__ import annotations

from .base import DecodeError, TensorMeta, exact_size, param

CHUNK = 1 << 20


def decode(data: bytes, params: dict, blobs: dict, meta: TensorMeta) -> bytes:
    import zstandard

    size = param(params, "size", int, 0, meta.max_bytes)
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
    return exact_size(b"".join(chunks), size)
