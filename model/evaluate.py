"""Evaluate a model on validation shards: the driver shared by ``golfpack eval`` and artifacts."""
from __future__ import annotations

import os
from typing import Iterable

import torch

from .console import progress_bar
from .distributed import DistContext
from .scoring import EvalResult, EvalSettings, evaluate, truncate_for_eval
from .shards import load_tokens
from .tokenizer import byte_tables_for


def evaluate_files(
    model: torch.nn.Module,
    val: str | os.PathLike | Iterable[str | os.PathLike],
    tokenizer: str | os.PathLike,
    settings: EvalSettings = EvalSettings(),
    *,
    ctx: DistContext | None = None,
    progress: bool = True,
) -> EvalResult:
    ctx = ctx or DistContext(0, 1, 0, torch.device("cpu"))
    vocab = model.vocab_size
    tables = byte_tables_for(tokenizer, vocab)
    tokens = truncate_for_eval(load_tokens(val, vocab), settings.seq_len)
    model = model.to(ctx.device)
    with progress_bar(progress and ctx.is_main, desc="eval", unit="win") as bar:

        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.update(done)

        return evaluate(model, tokens, tables, settings, device=ctx.device, rank=ctx.rank,
                        world_size=ctx.world_size, progress=advance)
