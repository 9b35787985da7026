"""golfpack checkpoints, and the challenge's plain state dicts.

A golfpack checkpoint is a ``torch.save`` of a dict of plain types only (so it loads with
``weights_only=True``, which never unpickles arbitrary objects)::

    {"format": "golfpack.checkpoint", "version": 1,
     "model_config": {...GPTConfig fields...},
     "state_dict": {name: tensor},
     "train_config": {...} | None,     # the trainer's resolved config
     "meta": {...},                    # step, tokens seen, wall time, val metrics, ...
     "resume": {...} | None}           # optimizer states and data position for --resume

A plain state dict (the challenge's ``final_model.pt``) is accepted everywhere a checkpoint
is; its config is inferred from the tensor shapes.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import GPTConfig
from .gpt import GPT
from .files import atomic_write_bytes

CHECKPOINT_FORMAT = "golfpack.checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not a GPT."""


@dataclass
class Checkpoint:
    state_dict: dict[str, torch.Tensor]
    model_config: GPTConfig
    train_config: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    resume: dict[str, Any] | None = None

    @property
    def train_seq_len(self) -> int:
        """The sequence length the weights were trained at (the challenge's 1024 when unknown)."""
        return int((self.train_config or {}).get("train_seq_len", 1024))

    def build_model(self) -> GPT:
        model = GPT(self.model_config)
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise CheckpointError(f"state dict does not fit the model: {first[1].strip() if len(first) > 1 else first[0]}") from None
        return model


def save_checkpoint(path: str | os.PathLike, ckpt: Checkpoint) -> None:
    obj = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_config": ckpt.model_config.to_dict(),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in ckpt.state_dict.items()},
        "train_config": ckpt.train_config,
        "meta": ckpt.meta,
        "resume": ckpt.resume,
    }
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt or foreign file
        raise CheckpointError(f"{path}: not a loadable torch checkpoint ({type(e).__name__}: {str(e)[:120]})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict, found {type(obj).__name__}")
    if obj.get("format") == CHECKPOINT_FORMAT:
        if obj.get("version") != CHECKPOINT_VERSION:
            raise CheckpointError(f"{path}: unsupported checkpoint version {obj.get('version')}")
        try:
            cfg = GPTConfig.from_dict(obj["model_config"])
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"{path}: bad model_config ({e})") from None
        return Checkpoint(obj["state_dict"], cfg, obj.get("train_config"), obj.get("meta") or {}, obj.get("resume"))
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: neither a golfpack checkpoint nor a plain state dict")
    try:
        cfg = GPTConfig.from_state_dict(obj)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return Checkpoint(dict(obj), cfg, meta={"source": "plain state dict"})
