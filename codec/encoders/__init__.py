"""Encode halves of the built-in codec stages (build side). A stage in ``encoders/<name>.py``
decodes with ``decoders/<name>.py``.

``BUILTIN`` loads on first use (PEP 562), so importing one encoder module does not import
them all: a records script ships only the encoders its pipeline uses, and only their libraries
become its requirements."""
from __future__ import annotations

import importlib
from typing import Any

BUILTIN_STAGES = (("intq", "RTN"), ("intq", "GPTQ"), ("floats", "FP16"), ("floats", "BF16"), ("floats", "FP32"),
                  ("floats", "Raw"), ("pack", "Pack"), ("shuffle", "Shuffle"), ("ans", "ANS"), ("ctxans", "CtxANS"),
                  ("rowpred", "RowPred"), ("zstd", "Zstd"), ("brotli", "Brotli"), ("lzma", "LZMA"))


def __getattr__(name: str) -> Any:
    if name != "BUILTIN":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return tuple(getattr(importlib.import_module(f".{module}", __name__), cls) for module, cls in BUILTIN_STAGES)
