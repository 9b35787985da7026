"""The codec container: a versioned binary file with no pickle, parsed as hostile input.

Layout (all integers little-endian)::

    offset  size  field
    0       4     magic  b"GPAK"
    4       1     version (1)
    5       3     reserved, zero
    8       4     M: manifest length in bytes
    12      4     S: streams length in bytes
    16      M     manifest: brotli-compressed UTF-8 JSON (schema in docs/container.md)
    16+M    S     streams: every tensor's data and side streams, back to back
    16+M+S  32    SHA-256 of bytes [0, 16+M+S)

The file length must be exactly ``16 + M + S + 32``. Every length and count is checked
against the file size or a fixed limit (``decoders.base``) before anything is allocated, and
the elements a container declares are bounded by its own size (``MAX_ELEMENTS_PER_BYTE``), so
a small container cannot make its decoders allocate gigabytes. Every failure is a
:class:`ContainerError` that says what is wrong and where. The writer is here too: one owner
per format.
"""
from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from typing import Any

from .base import (DTYPES, ELEMENT_SLACK, MAX_ELEMENTS_PER_BYTE, MAX_NAME_CHARS, MAX_NUMEL, MAX_TOTAL_NUMEL, DecodeError,
                   TensorMeta)
from .brotli import bounded as brotli_bounded

MAGIC = b"GPAK"
VERSION = 1
HEADER = struct.Struct("<4sB3sII")
DIGEST_BYTES = 32
MAX_MANIFEST_BYTES = 2 << 20  # decompressed: 4,096 tensors of ~400 JSON bytes; parsing it costs < 120 MB
MAX_TENSORS = 4096
# meta: names whose tensor is another's (a head tied to the embedding by sharing its parameter),
# alias -> the coded tensor's name; coded once, given back under both names (chain.py)
ALIASES_KEY = "aliases"
MAX_CHAIN = 16
MAX_DIMS = 8


class ContainerError(ValueError):
    """A container is malformed, truncated, tampered with, or does not decode."""


@dataclass(frozen=True)
class Span:
    offset: int
    length: int


@dataclass(frozen=True)
class StageRecord:
    stage: str
    params: dict[str, Any]
    blobs: dict[str, Span]


@dataclass(frozen=True)
class Entry:
    meta: TensorMeta
    chain: tuple[StageRecord, ...]
    data: Span


@dataclass
class Container:
    entries: list[Entry]
    meta: dict[str, Any] = field(default_factory=dict)
    streams: bytes = b""
    manifest_bytes: int = 0

    @property
    def numel(self) -> int:
        """Elements the container declares, all tensors together (bounded by its size)."""
        return sum(e.meta.numel for e in self.entries)

    def stream(self, span: Span) -> bytes:
        return self.streams[span.offset : span.offset + span.length]


def _inflate_manifest(packed: bytes) -> Any:
    try:
        raw = brotli_bounded(packed, MAX_MANIFEST_BYTES)
    except DecodeError as e:
        raise ContainerError(f"manifest: {e}") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ContainerError(f"manifest: not valid UTF-8 JSON ({str(e)[:80]})") from None


def _expect(cond: bool, *message: str) -> None:
    """Refuse with ``where: what`` unless ``cond``."""
    if not cond:
        raise ContainerError(": ".join(message))


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _span(v: Any, limit: int, where: str) -> Span:
    _expect(isinstance(v, list) and len(v) == 2 and all(_int(x) for x in v), where, "span must be [offset, length]")
    off, n = v
    _expect(0 <= off and 0 <= n and off + n <= limit, where, f"span [{off}, {n}] outside the {limit}-byte streams")
    return Span(off, n)


def _params(v: Any, where: str) -> dict[str, Any]:
    _expect(isinstance(v, dict) and len(v) <= 64, where, "params must be an object of at most 64 entries")
    for k, x in v.items():
        ok = isinstance(x, (str, int, float, bool)) or x is None
        _expect(ok and len(k) <= 64 and (not isinstance(x, str) or len(x) <= 256), where, f"bad parameter '{k[:64]}'")
    return dict(v)


def _entry(t: Any, i: int, limit: int) -> Entry:
    where = f"tensor #{i}"
    _expect(isinstance(t, dict), where, "entry must be an object")
    name = t.get("name")
    _expect(isinstance(name, str) and 0 < len(name) <= MAX_NAME_CHARS and name.isprintable(), where,
            f"name must be a printable string of 1..{MAX_NAME_CHARS} characters")
    where = f"tensor '{name}'"
    _expect(t.get("dtype") in DTYPES, where, f"dtype must be one of {DTYPES}")
    shape = t.get("shape")
    _expect(isinstance(shape, list) and len(shape) <= MAX_DIMS and all(_int(d) and 0 <= d <= MAX_NUMEL for d in shape),
            where, "shape must be a list of at most 8 non-negative ints")
    meta = TensorMeta(name, t["dtype"], tuple(shape))
    _expect(meta.numel <= MAX_NUMEL, where, f"{meta.numel} elements exceed the limit {MAX_NUMEL}")
    chain = t.get("chain")
    _expect(isinstance(chain, list) and 0 < len(chain) <= MAX_CHAIN, where, f"chain must have 1..{MAX_CHAIN} stages")
    records = []
    for j, s in enumerate(chain):
        sw = f"{where}, stage #{j}"
        _expect(isinstance(s, dict) and isinstance(s.get("stage"), str) and 0 < len(s["stage"]) <= 64
                and s["stage"].isidentifier(), sw, "bad stage record")
        blobs = s.get("blobs")
        _expect(isinstance(blobs, dict) and len(blobs) <= 16 and all(k.isidentifier() for k in blobs), sw,
                "blobs must be an object of at most 16 named spans")
        records.append(StageRecord(s["stage"], _params(s.get("params"), sw),
                                   {str(k)[:64]: _span(v, limit, f"{sw} blob '{str(k)[:64]}'") for k, v in blobs.items()}))
    return Entry(meta, tuple(records), _span(t.get("data"), limit, f"{where} data"))


def read_container(data: bytes) -> Container:
    """Parse and verify a container; never executes or unpickles anything."""
    total = len(data)
    _expect(total >= HEADER.size + DIGEST_BYTES, "container", f"truncated ({total} bytes)")
    magic, version, reserved, m, s = HEADER.unpack_from(data)
    _expect(magic == MAGIC, "container", f"bad magic {magic!r} (not a golfpack container)")
    _expect(version == VERSION, "container", f"unsupported version {version}")
    _expect(reserved == b"\0\0\0", "container", "reserved header bytes are not zero")
    _expect(HEADER.size + m + s + DIGEST_BYTES == total, "container",
            f"header declares {HEADER.size + m + s + DIGEST_BYTES} bytes but the container has {total}")
    body = memoryview(data)[: total - DIGEST_BYTES]
    _expect(hashlib.sha256(body).digest() == bytes(data[total - DIGEST_BYTES :]), "container",
            "SHA-256 mismatch (corrupted or tampered)")
    doc = _inflate_manifest(bytes(data[HEADER.size : HEADER.size + m]))
    _expect(isinstance(doc, dict) and isinstance(doc.get("tensors"), list), "manifest", "missing 'tensors' list")
    _expect(len(doc["tensors"]) <= MAX_TENSORS, "manifest", f"more than {MAX_TENSORS} tensors")
    _expect(isinstance(doc.get("meta", {}), dict), "manifest", "'meta' must be an object")
    entries = [_entry(t, i, s) for i, t in enumerate(doc["tensors"])]
    names = {e.meta.name for e in entries}
    _expect(len(names) == len(entries), "manifest", "duplicate tensor names")
    spans = sorted([(e.data.offset, e.data.length) for e in entries] +
                   [(b.offset, b.length) for e in entries for r in e.chain for b in r.blobs.values()])
    pos = 0
    for off, n in spans:  # the spans tile the streams: no overlap, no gap, no unaccounted byte
        _expect(off == pos, "streams", f"spans overlap or leave a gap at byte {pos}")
        pos += n
    _expect(pos == s, "streams", f"spans cover {pos} of {s} bytes")
    declared = sum(e.meta.numel for e in entries)
    _expect(declared <= MAX_TOTAL_NUMEL, "manifest", f"{declared} elements in total exceed the limit {MAX_TOTAL_NUMEL}")
    allowed = MAX_ELEMENTS_PER_BYTE * total + ELEMENT_SLACK
    _expect(declared <= allowed, "manifest", f"{declared} elements declared in a {total}-byte container "
            f"(at most {allowed}: {MAX_ELEMENTS_PER_BYTE} per byte + {ELEMENT_SLACK})")
    meta = doc.get("meta", {})
    aliases = meta.get(ALIASES_KEY, {})
    _expect(isinstance(aliases, dict) and len(aliases) <= MAX_TENSORS and all(
        isinstance(a, str) and 0 < len(a) <= MAX_NAME_CHARS and a.isprintable() and a not in names
        and isinstance(t, str) and t in names for a, t in aliases.items()),
        "manifest", f"'{ALIASES_KEY}' must map new tensor names to coded ones")
    streams = bytes(data[HEADER.size + m : HEADER.size + m + s])
    return Container(entries, meta, streams, m)


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
