"""Evaluate a model on validation shards: the driver shared by ``golfpack eval`` and artifacts."""
from __future__ import annotations

import os
from typing import Iterable

import torch
from tqdm import tqdm

from .distributed import DistContext
from .scoring import EvalResult, build_byte_tables, evaluate, load_tokenizer, truncate_for_eval, windows
from .shards import load_tokens


def evaluate_files(
    model: torch.nn.Module,
    val: str | os.PathLike | Iterable[str | os.PathLike],
    tokenizer: str | os.PathLike,
    seq_len: int = 1024,
    stride: int | None = None,
    batch_seqs: int = 32,
    ctx: DistContext | None = None,
    progress: bool = True,
) -> EvalResult:
    ctx = ctx or DistContext(0, 1, 0, torch.device("cpu"))
    vocab = model.cfg.vocab_size
    sp = load_tokenizer(tokenizer)
    if int(sp.vocab_size()) != vocab:
        raise ValueError(f"{tokenizer}: tokenizer vocab {int(sp.vocab_size())} does not match the model's {vocab}")
    tokens = truncate_for_eval(load_tokens(val, vocab), seq_len)
    n_windows = len(windows(tokens.numel() - 1, seq_len, stride))
    mine = n_windows * (ctx.rank + 1) // ctx.world_size - n_windows * ctx.rank // ctx.world_size
    model = model.to(ctx.device)
    with tqdm(total=mine, desc="eval", unit="win", disable=None if (progress and ctx.is_main) else True) as bar:
        return evaluate(
            model, tokens, build_byte_tables(sp, vocab), seq_len, stride, batch_seqs,
            ctx.device, ctx.rank, ctx.world_size, progress=bar.update,
        )
