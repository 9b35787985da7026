"""What the byte-compressor stages (zstd, brotli, lzma) share: a level and the declared size.
(A shared base, not a stage: it has no decoder of its own.)"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..decoders.base import BYTES
from ..stage import EncodeContext, Encoded, Stage, StageError


@dataclass
class LevelParams:
    level: int = 0  # 0: the coder's maximum


class ByteCompressor(Stage):
    consumes, produces = BYTES, BYTES
    Params = LevelParams
    max_level: ClassVar[int]

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if not 0 <= self.params.level <= self.max_level:
            raise StageError(f"stage '{self.name}': level must be in 0..{self.max_level} (0: the maximum), "
                             f"got {self.params.level}")

    def level(self) -> int:
        return self.params.level or self.max_level

    def encode(self, value: bytes, ctx: EncodeContext) -> Encoded:
        return Encoded(self.compress(bytes(value)), {"size": len(value)})

    def compress(self, data: bytes) -> bytes:
        raise NotImplementedError
