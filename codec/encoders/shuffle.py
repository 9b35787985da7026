"""Byte shuffle: byte k of every ``width``-byte element grouped together (helps LZ coders)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..decoders.base import BYTES
from ..stage import EncodeContext, Encoded, Stage, StageError


@dataclass
class ShuffleParams:
    width: int = 2

    def __post_init__(self) -> None:
        if not 1 <= self.width <= 8:
            raise ValueError(f"width must be in 1..8, got {self.width}")


class Shuffle(Stage):
    name = "shuffle"
    summary = "byte shuffle: byte k of every width-byte element together"
    consumes, produces = BYTES, BYTES
    Params = ShuffleParams

    def encode(self, value: bytes, ctx: EncodeContext) -> Encoded:
        w = self.params.width
        if len(value) % w:
            raise StageError(f"shuffle: {len(value)} bytes of '{ctx.meta.name}' not a multiple of width {w}")
        return Encoded(np.frombuffer(value, dtype=np.uint8).reshape(-1, w).T.tobytes(), {"width": w})
