"""How validation is scored, as one checked value: kept free of torch so that the command line
can show its defaults without importing it."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EvalSettings:
    """How validation is scored; the defaults are the challenge's (``eval_val``'s contiguous
    1024-token windows). One object for every command that scores (``eval``, ``run``, an
    artifact's ``eval``, the records script), checked when it is made, before any data loads."""

    seq_len: int = 1024
    stride: int | None = None  # None: contiguous windows; S: sliding windows every S tokens
    batch_seqs: int = 32  # windows per forward pass

    def __post_init__(self) -> None:
        if not (isinstance(self.seq_len, int) and self.seq_len >= 1):
            raise ValueError(f"seq_len must be a positive integer, got {self.seq_len}")
        if self.stride is not None and not (isinstance(self.stride, int) and 1 <= self.stride <= self.seq_len):
            raise ValueError(f"stride must be in 1..seq_len={self.seq_len}, got {self.stride}")
        if not (isinstance(self.batch_seqs, int) and self.batch_seqs >= 1):
            raise ValueError(f"batch_seqs must be a positive integer, got {self.batch_seqs}")
