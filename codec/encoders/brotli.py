"""brotli (quality 11 by default)."""
from __future__ import annotations

from ._compressor import ByteCompressor


class Brotli(ByteCompressor):
    name, max_level = "brotli", 11
    summary = "brotli (quality 11 by default)"

    def compress(self, data: bytes) -> bytes:
        import brotli

        return brotli.compress(data, quality=self.level())
