"""Built-in codec stages (encode halves); their decoders live in ``golfpack.codec.decoders``."""
from .coders import ANS, Brotli, LZMA, Zstd
from .floats import BF16, FP16, FP32
from .quantizers import GPTQ, RTN
from .transforms import Pack, Shuffle

BUILTIN = (RTN, GPTQ, FP16, BF16, FP32, Pack, Shuffle, ANS, Zstd, Brotli, LZMA)
