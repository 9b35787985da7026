"""Writing the codec container (encode side, never shipped); the format is in ``container``."""
from __future__ import annotations

import hashlib
import json

from .container import HEADER, MAGIC, VERSION
from .decoders.base import TensorMeta


def write_container(entries: list[tuple[TensorMeta, list[tuple[str, dict, dict[str, bytes]]], bytes]], meta: dict) -> bytes:
    """Serialize ``(tensor meta, [(stage, params, blobs)], data)`` records deterministically."""
    import brotli

    streams = bytearray()

    def put(b: bytes) -> list[int]:
        span = [len(streams), len(b)]
        streams.extend(b)
        return span

    tensors = []
    for tmeta, chain, data in entries:
        records = [
            {"stage": name, "params": params, "blobs": {k: put(v) for k, v in sorted(blobs.items())}}
            for name, params, blobs in chain
        ]
        tensors.append({"name": tmeta.name, "dtype": tmeta.dtype, "shape": list(tmeta.shape),
                        "chain": records, "data": put(data)})
    manifest = json.dumps({"tensors": tensors, "meta": meta}, sort_keys=True, separators=(",", ":"))
    packed = brotli.compress(manifest.encode("utf-8"), quality=11)
    body = HEADER.pack(MAGIC, VERSION, b"\0\0\0", len(packed), len(streams)) + packed + bytes(streams)
    return body + hashlib.sha256(body).digest()
