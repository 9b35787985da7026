"""The challenge baseline GPT, its checkpoints, the challenge shard format and exact val_bpb scoring.

This package depends on nothing else of golfpack: it ships inside every artifact.
"""
from .config import GPTConfig
from .gpt import GPT, CastedLinear

__all__ = ["GPTConfig", "GPT", "CastedLinear"]
