"""A raw LZMA2 stream, no container header (preset 9|extreme by default)."""
from __future__ import annotations

import lzma

from ..decoders.lzma import FILTERS
from ._compressor import ByteCompressor


class LZMA(ByteCompressor):
    name, max_level, summary = "lzma", 9, "raw LZMA2 stream, no container header (preset 9|extreme)"

    def compress(self, data: bytes) -> bytes:
        filters = [{**FILTERS[0], "preset": self.level() | lzma.PRESET_EXTREME}]
        return lzma.compress(data, format=lzma.FORMAT_RAW, filters=filters)
