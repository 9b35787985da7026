"""ANS over integer symbols with a per-tensor categorical model (constriction)."""
from __future__ import annotations

import numpy as np

from ..decoders.counts import categorical, write_varints
from ..decoders.base import BYTES, SYMBOLS
from ..stage import EncodeContext, Encoded, Stage


class ANS(Stage):
    name = "ans"
    summary = "range-ANS with a per-tensor categorical model (constriction)"
    consumes, produces = SYMBOLS, BYTES

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
