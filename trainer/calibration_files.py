"""Calibration from challenge shards and to and from files: what ``golfpack train`` saves
beside its checkpoint and ``golfpack build`` reads, over :mod:`calibrate`'s batch functions.

Build side: an inlined script calibrates from its own batches and ships only ``calibrate.py``.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..model.files import MAX_CHECKPOINT_BYTES, atomic_write_bytes
from ..model.torch_files import load_torch_file
from ..model.shards import resolve_shards, shard_batches, shard_tokens
from .calibrate import Batch, hessians_of, sensitivities_of, take_tokens

CALIB_SUFFIX = ".calib.pt"
SENS_SUFFIX = ".sens.pt"


def calib_path(checkpoint: str | os.PathLike) -> Path:
    """Where a checkpoint's calibration statistics live: ``final.pt`` -> ``final.calib.pt``."""
    p = Path(checkpoint)
    return p.with_name(p.stem + CALIB_SUFFIX)


def sens_path(checkpoint: str | os.PathLike) -> Path:
    """Where a checkpoint's loss sensitivities live: ``final.pt`` -> ``final.sens.pt``."""
    p = Path(checkpoint)
    return p.with_name(p.stem + SENS_SUFFIX)


def collect_hessians(model: torch.nn.Module, train_files: str, tokens: int, seq_len: int, batch_seqs: int = 8,
                     device: torch.device | str = "cpu", progress: bool = True) -> dict[str, torch.Tensor]:
    """:func:`hessians_of` the first ``tokens`` (whole sequences) of the training shards."""
    if tokens < seq_len:
        raise ValueError(f"calibration needs at least one sequence ({seq_len} tokens), got {tokens}")
    n_seqs = tokens // seq_len
    batches = shard_batches(train_files, getattr(model, "vocab_size", None), seq_len, 1)
    rows = take_tokens(batches, n_seqs * seq_len)
    grouped = [(torch.cat([x for x, _ in rows[i : i + batch_seqs]]), torch.cat([y for _, y in rows[i : i + batch_seqs]]))
               for i in range(0, len(rows), batch_seqs)]
    return hessians_of(model, grouped, device, progress)


def collect_sensitivity(model: torch.nn.Module, train_files: str, tokens: int, seq_len: int, skip: int = 0,
                        device: torch.device | str = "cpu", progress: bool = True) -> dict[str, torch.Tensor]:
    """:func:`sensitivities_of` ``tokens`` (whole sequences) of the training shards after ``skip``."""
    if tokens < seq_len:
        raise ValueError(f"sensitivity needs at least one sequence ({seq_len} tokens), got {tokens}")
    batches = shard_batches(train_files, getattr(model, "vocab_size", None), seq_len, 1, skip=skip)
    return sensitivities_of(model, take_tokens(batches, tokens // seq_len * seq_len), device, progress)


def heldout_batches(train_files: str, vocab_size: int, skip: int, tokens: int, seq_len: int) -> list[Batch]:
    """Windows of ``seq_len`` over ``tokens`` training tokens after the first ``skip`` (those
    calibration read), one a batch (never validation tokens)."""
    return take_tokens(shard_batches(train_files, vocab_size, seq_len, 1, skip=skip), tokens // seq_len * seq_len)


# The log's closed-loop line: which tokens score the fill's contenders, or why none do.
CLOSED_LOOP_ON = "closed loop: contenders scored on {}"
CLOSED_LOOP_OFF = "closed loop: off ({}); the allocation by prediction ships"


def scoring_batches(train_files: str, vocab_size: int, after: int, tokens: int, seq_len: int,
                    seen: int | None) -> tuple[list[Batch], str]:
    """The closed loop's held-out tokens, and a line saying what they are. Why it matters: a
    score on tokens the model was trained on cannot see what over-fits (on a small training
    set, the loop preferred a contender that lost on validation). So: the last ``tokens`` of
    the training stream when the run never reached them (``seen``: its checkpoint's
    ``tokens_seen``, the stream's prefix it trained on), else those after the first ``after``
    (calibration's and the sensitivities'), with the log saying how many the run had read."""
    n = tokens // seq_len * seq_len
    total = sum(shard_tokens(f) for f in resolve_shards(train_files))
    tail = total - n - 1  # the last window's last target is the stream's last token
    if seen is not None and tail >= max(seen, after):
        return (heldout_batches(train_files, vocab_size, tail, n, seq_len),
                f"the last {n:,} tokens of {train_files}, which the run never reached (it trained on the first "
                f"{seen:,} of {total:,})")
    batches = heldout_batches(train_files, vocab_size, after, n, seq_len)
    if seen is None:
        return batches, f"{n:,} tokens of {train_files} after the first {after:,} (whether the run trained on them " \
                        "is unknown: the checkpoint does not say how many tokens it read)"
    overlap = min(max(seen - after, 0), n) if seen < total else n
    read = f"{seen / total:.1f} passes over" if seen > total else "out of"
    read = f"{read} these shards' {total:,}"
    return batches, (f"{n:,} tokens of {train_files} after the first {after:,}; the run trained on {overlap:,} of them "
                     f"(it read {seen:,} tokens, {read}), so the loop cannot see what over-fits")


def save_hessians(path: str | os.PathLike, hessians: dict[str, torch.Tensor], *, overwrite: bool = False) -> None:
    """One file; shared Hessians (q/k/v) are stored once thanks to torch's storage sharing.
    (Sensitivities are saved the same way, to their own file.)"""
    import io

    buf = io.BytesIO()
    torch.save(hessians, buf)
    atomic_write_bytes(Path(path), buf.getvalue(), overwrite=overwrite)


def load_hessians(path: str | os.PathLike, what: str = "calibration") -> dict[str, torch.Tensor]:
    """A calibration file (name -> 2-D tensor: Hessians, or sensitivities with ``what``),
    loaded with ``weights_only`` from a regular file; every tensor must be finite."""
    p = Path(path)
    obj = load_torch_file(p, MAX_CHECKPOINT_BYTES, f"{what} file")  # dense tensors: checked before any is read
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) and v.ndim == 2
                                            and v.is_floating_point() and bool(torch.isfinite(v).all())
                                            for k, v in obj.items()):
        raise ValueError(f"{p}: not a {what} file (expected name -> finite 2-D tensor)")
    return obj
