"""Integer symbols as int8 (or int16 when needed) little-endian bytes, for byte compressors."""
from __future__ import annotations

import numpy as np

from ..decoders.base import BYTES, SYMBOLS
from ..stage import EncodeContext, Encoded, Stage, StageError


class Pack(Stage):
    name = "pack"
    summary = "integer symbols as int8 (or int16 when needed) bytes, for byte compressors"
    consumes, produces = SYMBOLS, BYTES

    def encode(self, value: np.ndarray, ctx: EncodeContext) -> Encoded:
        lo, hi = (int(value.min()), int(value.max())) if value.size else (0, 0)
        width = 1 if -128 <= lo and hi <= 127 else 2
        if width == 2 and not (-32768 <= lo and hi <= 32767):
            raise StageError(f"pack: symbols of '{ctx.meta.name}' do not fit int16")
        return Encoded(value.astype("<i1" if width == 1 else "<i2").tobytes(), {"width": width})
