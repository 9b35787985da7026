"""Exact val_bpb, as the challenge computes it.

Each scored target token counts the bytes of its piece (``tokenizer.target_bytes``, the
challenge's sentencepiece accounting). Losses and byte counts are summed in float64 and all-reduced across ranks;
``bpb = loss_sum / ln 2 / bytes``, i.e. ``val_loss / ln 2 * tokens / bytes``.

Two window modes share one loop:

* contiguous (``stride=None``): the challenge's ``eval_val`` windows, non-overlapping
  ``seq_len`` blocks over the validation tokens truncated to a multiple of ``seq_len`` (+1);
* sliding (``stride=S``): windows start every ``S`` tokens and each scores only the targets
  no earlier window scored, so every target is scored exactly once (asserted) with at least
  ``seq_len - S`` tokens of context. ``S = seq_len`` reproduces the contiguous mode.

Per-token losses come from float64 log-softmax of the model's logits, so the only rounding
that differs from a plain float64 reference is inside the model itself.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .eval_settings import EvalSettings
from .tokenizer import ByteTables, target_bytes


def truncate_for_eval(tokens: torch.Tensor, seq_len: int) -> torch.Tensor:
    """The challenge's ``load_validation_tokens`` cut: a whole number of ``seq_len`` targets."""
    EvalSettings(seq_len)
    usable = ((tokens.numel() - 1) // seq_len) * seq_len
    if usable <= 0:
        raise ValueError(f"validation split ({tokens.numel()} tokens) is too short for seq_len={seq_len}")
    return tokens[: usable + 1]


def windows(n_targets: int, seq_len: int, stride: int | None) -> list[tuple[int, int]]:
    """``(start, first_scored)`` per window: inputs ``tokens[start:start+seq_len]``, scored
    target offsets ``first_scored..seq_len-1``. Asserts every target is scored exactly once."""
    if stride is None:
        stride = seq_len
    if not 1 <= stride <= seq_len:
        raise ValueError(f"stride must be in 1..seq_len={seq_len}, got {stride}")
    if n_targets < seq_len:
        raise ValueError(f"{n_targets} targets are fewer than one window of seq_len={seq_len}")
    starts = list(range(0, n_targets - seq_len + 1, stride))
    if starts[-1] + seq_len < n_targets:
        starts.append(n_targets - seq_len)
    out, scored_to = [], 0
    for s in starts:
        out.append((s, scored_to - s if scored_to > s else 0))
        scored_to = s + seq_len
    covered = sum(seq_len - f for _, f in out)
    assert covered == n_targets and scored_to == n_targets, "window coverage is not exact"
    return out


@dataclass(frozen=True)
class EvalResult:
    val_loss: float
    val_bpb: float
    tokens: int
    bytes: int
    seconds: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    tables: ByteTables,
    settings: EvalSettings,
    *,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    progress: Callable[[int, int], None] | None = None,
    bf16: bool = True,
) -> EvalResult:
    """Score ``tokens`` (already truncated with :func:`truncate_for_eval`) with ``model.logits``.

    On CUDA the logits come from bf16 autocast, as the challenge evaluates; ``bf16=False`` keeps
    fp32 there (for comparisons finer than bf16's rounding, such as ``bench rd``'s).

    Windows are split into contiguous rank slices; sums are all-reduced when a process group
    is initialised. ``progress(done, total)`` is called after each batch with the windows just
    scored and the number of windows of this rank.
    """
    seq_len, batch_seqs = settings.seq_len, settings.batch_seqs
    t0 = time.perf_counter()
    device = torch.device(device)
    tables = tables.to(device)
    all_windows = windows(tokens.numel() - 1, seq_len, settings.stride)
    lo, hi = len(all_windows) * rank // world_size, len(all_windows) * (rank + 1) // world_size
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, tokens, bytes
    offsets = torch.arange(seq_len, device=device)
    tokens = tokens.to(device=device, dtype=torch.int64)  # CUDA cannot index uint16
    was_training = model.training
    model.eval()
    mine = all_windows[lo:hi]
    for batch in _batches(mine, batch_seqs):
        idx = torch.tensor([s for s, _ in batch], device=device)[:, None] + torch.arange(seq_len + 1, device=device)
        local = tokens[idx]
        x, y = local[:, :-1], local[:, 1:]
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and bf16):
            logits = model.logits(x)
        nll = F.cross_entropy(logits.double().flatten(0, 1), y.flatten(), reduction="none").view_as(y)
        mask = offsets[None, :] >= torch.tensor([f for _, f in batch], device=device)[:, None]
        nbytes = target_bytes(x, y, tables).to(torch.float64)
        sums += torch.stack((nll[mask].sum(), mask.sum().to(torch.float64), nbytes[mask].sum()))
        if progress is not None:
            progress(len(batch), len(mine))
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums, op=dist.ReduceOp.SUM)
    model.train(was_training)
    loss_sum, n_tok, n_bytes = (float(v) for v in sums.cpu())
    val_loss = loss_sum / n_tok
    return EvalResult(
        val_loss=val_loss,
        val_bpb=val_loss / math.log(2.0) * n_tok / n_bytes,
        tokens=int(n_tok),
        bytes=int(n_bytes),
        seconds=time.perf_counter() - t0,
    )
