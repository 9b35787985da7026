"""Transforms between symbols and bytes."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..decoders.base import BYTES, SYMBOLS
from ..stage import EncodeContext, Encoded, Stage, StageError


class Pack(Stage):
    name = "pack"
    summary = "integer symbols as int8 (or int16 when needed) bytes, for byte compressors"
    consumes, produces, decoder = SYMBOLS, BYTES, "golfpack.codec.decoders.pack:decode"

    def encode(self, value: np.ndarray, ctx: EncodeContext) -> Encoded:
        lo, hi = (int(value.min()), int(value.max())) if value.size else (0, 0)
        width = 1 if -128 <= lo and hi <= 127 else 2
        if width == 2 and not (-32768 <= lo and hi <= 32767):
            raise StageError(f"pack: symbols of '{ctx.meta.name}' do not fit int16")
        return Encoded(value.astype("<i1" if width == 1 else "<i2").tobytes(), {"width": width})


@dataclass
class ShuffleParams:
    width: int = 2

    def __post_init__(self) -> None:
        if not 1 <= self.width <= 8:
            raise ValueError(f"width must be in 1..8, got {self.width}")


class Shuffle(Stage):
    name = "shuffle"
    summary = "byte shuffle: byte k of every width-byte element together"
    consumes, produces, decoder = BYTES, BYTES, "golfpack.codec.decoders.shuffle:decode"
    Params = ShuffleParams

    def encode(self, value: bytes, ctx: EncodeContext) -> Encoded:
        w = self.params.width
        if len(value) % w:
            raise StageError(f"shuffle: {len(value)} bytes of '{ctx.meta.name}' not a multiple of width {w}")
        return Encoded(np.frombuffer(value, dtype=np.uint8).reshape(-1, w).T.tobytes(), {"width": w})
