"""Encode halves of the built-in codec stages (build side, never shipped). A stage in
``encoders/<name>.py`` decodes with ``decoders/<name>.py``."""
from .ans import ANS
from .brotli import Brotli
from .ctxans import CtxANS
from .floats import BF16, FP16, FP32
from .intq import GPTQ, RTN
from .lzma import LZMA
from .pack import Pack
from .shuffle import Shuffle
from .zstd import Zstd

BUILTIN = (RTN, GPTQ, FP16, BF16, FP32, Pack, Shuffle, ANS, CtxANS, Zstd, Brotli, LZMA)
