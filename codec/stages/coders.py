"""Lossless coders: ANS over symbols (constriction) and byte compressors (zstd, brotli, lzma)."""
from __future__ import annotations

import lzma
from dataclasses import dataclass

import numpy as np

from ..decoders.ans import categorical
from ..decoders.base import BYTES, SYMBOLS
from ..stage import EncodeContext, Encoded, Stage


def write_varints(values: np.ndarray) -> bytes:
    out = bytearray()
    for v in values.tolist():
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out)


class ANS(Stage):
    name = "ans"
    summary = "range-ANS with a per-tensor categorical model (constriction)"
    consumes, produces, decoder = SYMBOLS, BYTES, "golfpack.codec.decoders.ans:decode"

    def encode(self, value: np.ndarray, ctx: EncodeContext) -> Encoded:
        import constriction

        flat = value.reshape(-1).astype(np.int64)
        lo = int(flat.min()) if flat.size else 0
        shifted = (flat - lo).astype(np.int32)
        counts = np.bincount(shifted, minlength=1)
        coder = constriction.stream.stack.AnsCoder()
        if counts.size > 1:
            coder.encode_reverse(shifted, categorical(counts))
        words = coder.get_compressed().astype("<u4").tobytes()
        return Encoded(words, {"lo": lo, "n": int(counts.size)}, {"table": write_varints(counts)})


@dataclass
class LevelParams:
    level: int = 0  # 0: the coder's maximum


class _ByteCoder(Stage):
    consumes, produces = BYTES, BYTES
    Params = LevelParams
    max_level: int

    def level(self) -> int:
        return self.params.level or self.max_level

    def encode(self, value: bytes, ctx: EncodeContext) -> Encoded:
        return Encoded(self.compress(bytes(value)), {"size": len(value)})

    def compress(self, data: bytes) -> bytes:
        raise NotImplementedError


class Zstd(_ByteCoder):
    name, max_level, summary = "zstd", 22, "zstandard (level 22 by default)"
    decoder = "golfpack.codec.decoders.bytecoders:decode_zstd"

    def compress(self, data: bytes) -> bytes:
        import zstandard

        return zstandard.ZstdCompressor(level=self.level(), write_content_size=True).compress(data)


class Brotli(_ByteCoder):
    name, max_level, summary = "brotli", 11, "brotli (quality 11 by default)"
    decoder = "golfpack.codec.decoders.bytecoders:decode_brotli"

    def compress(self, data: bytes) -> bytes:
        import brotli

        return brotli.compress(data, quality=self.level())


class LZMA(_ByteCoder):
    name, max_level, summary = "lzma", 9, "raw LZMA2 stream, no container header (preset 9|extreme)"
    decoder = "golfpack.codec.decoders.bytecoders:decode_lzma"

    def compress(self, data: bytes) -> bytes:
        preset = self.level() | lzma.PRESET_EXTREME
        return lzma.compress(data, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "preset": preset}])
