"""golfpack checkpoints, and the challenge's plain state dicts.

A golfpack checkpoint is a ``torch.save`` of a dict of plain types only (so it loads with
``weights_only=True``, which never unpickles arbitrary objects)::

    {"format": "golfpack.checkpoint", "version": 1,
     "model_builder": "module:function",   # absent: golfpack's GPT (model/builders.py)
     "model_config": {...the builder's config...},
     "state_dict": {name: tensor},
     "train_config": {...} | None,     # the trainer's resolved config
     "meta": {...},                    # step, tokens seen, wall time, val metrics, ...
     "resume": {...} | None}           # optimizer states and data position for --resume

A plain state dict (the challenge's ``final_model.pt``) is accepted everywhere a checkpoint
is; its config is inferred from the tensor shapes (it is a baseline GPT), unless the caller
names another model builder.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection

import torch

from torch import nn

from .anatomy import ModelBuilderError, load_weights

from .builders import GPT_BUILDER, build_model, default_config, split_builder
from .config import GPTConfig
from .console import printable
from .files import MAX_CHECKPOINT_BYTES, atomic_write_bytes
from .torch_files import load_torch_file

CHECKPOINT_FORMAT = "golfpack.checkpoint"
CHECKPOINT_VERSION = 1
MAX_SEQ_LEN = 1 << 20
CHECKPOINT_KEYS = ("format", "version", "model_builder", "model_config", "state_dict", "train_config", "meta", "resume")
# meta keys golfpack's trainer writes and the packer reads: how many tokens of its training stream
# the run read (the closed loop's scoring tokens avoid them), and the grids QAT trained toward
TOKENS_SEEN_KEY, QAT_PLAN_KEY = "tokens_seen", "qat_plan"


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not a GPT."""


@dataclass
class Checkpoint:
    state_dict: dict[str, torch.Tensor]
    model_config: dict[str, Any]
    train_config: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    resume: dict[str, Any] | None = None
    model_builder: str = GPT_BUILDER
    source: str = field(default="checkpoint", compare=False)  # what errors name it: its file, once read from one

    @property
    def train_seq_len(self) -> int:
        """The sequence length the weights were trained at (the challenge's 1024 when unknown)."""
        value = (self.train_config or {}).get("train_seq_len", 1024)
        if type(value) is not int or not 1 <= value <= MAX_SEQ_LEN:
            raise CheckpointError(f"{self.source}: its train_config's train_seq_len {printable(repr(value))[:40]} is "
                                  f"not a sequence length (1..{MAX_SEQ_LEN:,})")
        return value

    @property
    def tokens_seen(self) -> int | None:
        """How many tokens of its training stream the run read, when its meta says so."""
        seen = self.meta.get(TOKENS_SEEN_KEY)
        return seen if type(seen) is int and seen >= 0 else None

    @property
    def vocab_size(self) -> int:
        return int(self.model_config["vocab_size"])

    def build_model(self) -> nn.Module:
        """The model with these weights (a plugin's builder must be importable: ``--model``)."""
        try:
            model = build_model(self.model_builder, self.model_config, sum(t.numel() for t in self.state_dict.values()))
            return load_weights(model, self.state_dict, self.source)
        except (ModelBuilderError, ValueError) as e:
            hint = ("; a plain state dict's model is built with its module's DEFAULT_CONFIG (the GPT's inferred from "
                    "the weights): give the rest with --set model.KEY=VALUE") \
                if self.meta.get("source") == "plain state dict" else ""
            raise CheckpointError(f"{e}{hint}") from None


def save_checkpoint(path: str | os.PathLike, ckpt: Checkpoint, *, overwrite: bool = False) -> None:
    obj = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_builder": ckpt.model_builder,
        "model_config": dict(ckpt.model_config),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in ckpt.state_dict.items()},
        "train_config": ckpt.train_config,
        "meta": ckpt.meta,
        "resume": ckpt.resume,
    }
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(Path(path), buf.getvalue(), overwrite=overwrite)


def load_checkpoint(path: str | os.PathLike, builder: str | None = None, trusted: Collection[str] = ()) -> Checkpoint:
    """A checkpoint or plain state dict. ``builder``: the model builder the caller was told to
    use (``--model``): a plain state dict is then that builder's model, with its module's
    ``DEFAULT_CONFIG``; a golfpack checkpoint trained with another builder is refused.

    A checkpoint names the code that builds its model, and a file must never choose what code
    runs (``weights_only`` stops unpickling, not ``subprocess:run`` as a builder): without
    ``builder`` the name it holds must be golfpack's GPT or one of ``trusted`` (the installed
    ``golfpack.models`` entry points, ``packer.models.trusted_builders``), checked before
    anything it names is imported."""
    ckpt = _load(Path(path), builder)
    if builder is not None and builder != ckpt.model_builder:
        raise CheckpointError(f"{path} was trained with model builder '{ckpt.model_builder}', not '{builder}'")
    if ckpt.model_builder not in (GPT_BUILDER, builder, *trusted):
        raise CheckpointError(f"{path} names model builder '{printable(ckpt.model_builder)[:200]}', which is not "
                              "golfpack's GPT or an installed golfpack.models entry point: refused, nothing it names "
                              "is imported (pass --model to use your own)")
    return ckpt


def _golfpack_fields(obj: dict, path: Path) -> str:
    """Check a golfpack checkpoint's fields by type before any is used (the tree itself was
    checked by the torch-file reader); its model builder."""
    version = obj.get("version")
    if type(version) is not int or version != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint version {printable(repr(version))[:40]}")
    unknown = sorted(set(obj) - set(CHECKPOINT_KEYS))
    if unknown:
        raise CheckpointError(f"{path}: unknown checkpoint key '{printable(unknown[0])[:64]}'")
    for key in ("train_config", "meta", "resume"):
        if obj.get(key) is not None and not isinstance(obj[key], dict):
            raise CheckpointError(f"{path}: its {key} is not a table")
    builder = obj.get("model_builder", GPT_BUILDER)
    nested = obj["train_config"].get("model_builder", GPT_BUILDER) if obj.get("train_config") else builder
    if not (isinstance(builder, str) and isinstance(nested, str)) or nested != builder:
        # TrainConfig.from_dict imports what the nested one names: it must be the builder vetted
        raise CheckpointError(f"{path}: its train_config names model builder '{printable(nested)[:200]}', the "
                              f"checkpoint '{printable(builder)[:200]}': refused, nothing either names is imported")
    return builder


def _load(path: Path, builder: str | None) -> Checkpoint:
    try:
        obj = load_torch_file(path, MAX_CHECKPOINT_BYTES, "torch checkpoint")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except (OSError, ValueError) as e:  # not a regular file, too large, not a plain dense tree (TorchFileError)
        raise CheckpointError(str(e)) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict, found {type(obj).__name__}")
    if isinstance(obj.get("format"), str) and obj["format"] == CHECKPOINT_FORMAT:
        builder = _golfpack_fields(obj, path)
        try:
            split_builder(builder)
            cfg = obj["model_config"]
            if not isinstance(cfg, dict):
                raise ValueError("not a table")
            if builder == GPT_BUILDER:  # checked and completed here, so old checkpoints load as new ones
                cfg = GPTConfig.from_dict(cfg).to_dict()
        except (ValueError, TypeError, KeyError) as e:
            raise CheckpointError(f"{path}: bad model_config ({e})") from None
        sd = obj.get("state_dict")
        if not (isinstance(sd, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items())):
            raise CheckpointError(f"{path}: its state_dict is not a table of named tensors")
        return Checkpoint(sd, cfg, obj.get("train_config"), obj.get("meta") or {}, obj.get("resume"),
                          builder, str(path))
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: neither a golfpack checkpoint nor a plain state dict")
    if builder not in (None, GPT_BUILDER):
        try:
            return Checkpoint(dict(obj), default_config(builder), meta={"source": "plain state dict"},
                              model_builder=builder, source=str(path))
        except (ValueError, ImportError) as e:
            raise CheckpointError(f"{path}: {e}") from None
    try:
        cfg = GPTConfig.from_state_dict(obj)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return Checkpoint(dict(obj), cfg.to_dict(), meta={"source": "plain state dict"}, source=str(path))
