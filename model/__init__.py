"""The challenge baseline GPT, its checkpoints, the challenge shard format and exact val_bpb scoring.

This package depends on nothing else of golfpack: it ships inside every artifact. Its names
load on first use (PEP 562), so importing a light submodule (``console``, ``files``) does not
load torch: the ``golfpack`` command line starts without it.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"GPTConfig": ".config", "GPT": ".gpt", "CastedLinear": ".gpt"}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
