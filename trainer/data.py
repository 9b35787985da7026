"""The challenge's distributed loader: one shared token stream, a disjoint span per rank."""
from __future__ import annotations

import torch

from ..model.shards import TokenStream


class DistributedTokenLoader:
    """Each call takes ``world_size`` consecutive spans of ``local_tokens + 1`` tokens from the
    stream and keeps span ``rank``; the extra token lets targets be the inputs shifted by one.
    With the global batch fixed, every world size sees the same tokens in the same order."""

    def __init__(self, pattern: str, rank: int, world_size: int, device: torch.device, vocab_size: int | None = None,
                 val: str | None = None):
        self.rank, self.world_size, self.device = rank, world_size, device
        self.stream = TokenStream(pattern, vocab_size, val)

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        local_tokens = global_tokens // (self.world_size * grad_accum_steps)
        span = local_tokens + 1
        chunk = self.stream.take(span * self.world_size)
        local = chunk[self.rank * span : (self.rank + 1) * span].to(dtype=torch.int64)
        x = local[:-1].reshape(-1, seq_len)
        y = local[1:].reshape(-1, seq_len)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
