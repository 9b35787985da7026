"""zstandard (level 22 by default)."""
from __future__ import annotations

from ._compressor import ByteCompressor


class Zstd(ByteCompressor):
    name, max_level, summary = "zstd", 22, "zstandard (level 22 by default)"

    def compress(self, data: bytes) -> bytes:
        import zstandard

        return zstandard.ZstdCompressor(level=self.level(), write_content_size=True).compress(data)
