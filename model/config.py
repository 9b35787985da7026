"""Model shape as a dataclass; defaults are the Parameter Golf baseline (17,059,912 parameters)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 1024
    num_layers: int = 9
    model_dim: int = 512
    num_heads: int = 8
    num_kv_heads: int = 4
    mlp_mult: int = 2
    tie_embeddings: bool = True
    tied_embed_init_std: float = 0.005
    logit_softcap: float = 30.0
    rope_base: float = 10000.0
    qk_gain_init: float = 1.5

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # a config may come from someone else's file: types first
            v, kind = getattr(self, f.name), type(f.default)  # (annotations do not survive the minifier)
            if kind is int and not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                raise ValueError(f"{f.name} must be a positive integer, got {v!r}")
            if kind is float and not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)):
                raise ValueError(f"{f.name} must be a finite number, got {v!r}")
            if kind is bool and not isinstance(v, bool):
                raise ValueError(f"{f.name} must be true or false, got {v!r}")
        if self.model_dim % self.num_heads:
            raise ValueError(f"model_dim={self.model_dim} must be divisible by num_heads={self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} must be divisible by num_kv_heads={self.num_kv_heads}")
        if (self.model_dim // self.num_heads) % 2:
            raise ValueError("head_dim must be even for RoPE")
        for name in ("logit_softcap", "rope_base"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.tied_embed_init_std < 0:
            raise ValueError(f"tied_embed_init_std must not be negative, got {self.tied_embed_init_std}")

    @property
    def head_dim(self) -> int:
        return self.model_dim // self.num_heads

    @property
    def num_parameters(self) -> int:
        """The model's parameter count, by arithmetic: what a config promises can be compared
        with the weights before a model of that size is allocated (model/builders.py)."""
        dim, kv_dim, hidden = self.model_dim, self.num_kv_heads * self.head_dim, self.mlp_mult * self.model_dim
        per_block = 2 * dim * dim + 2 * dim * kv_dim + self.num_heads + 2 * dim * hidden + 4 * dim
        skips = min(self.num_layers // 2, self.num_layers - self.num_layers // 2)
        heads = 1 if self.tie_embeddings else 2
        return heads * self.vocab_size * dim + skips * dim + self.num_layers * per_block

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GPTConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**dict(d))

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], **overrides: Any) -> "GPTConfig":
        """Infer the shape from a state dict's tensor shapes.

        Head counts are not visible in the matrices except through ``q_gain`` (one gain per
        head); the KV head count then follows from ``c_k``'s output width. Scalars that leave
        no trace in the weights (softcap, RoPE base) keep their defaults unless overridden.
        """
        try:
            vocab_size, model_dim = sd["tok_emb.weight"].shape
            layers = {int(k.split(".")[1]) for k in sd if k.startswith("blocks.")}
            num_layers = max(layers) + 1
            num_heads = sd["blocks.0.attn.q_gain"].shape[0]
            kv_dim = sd["blocks.0.attn.c_k.weight"].shape[0]
            hidden = sd["blocks.0.mlp.fc.weight"].shape[0]
        except (KeyError, ValueError, IndexError) as e:
            raise ValueError(f"not a GPT state dict (missing or malformed {e})") from None
        if not 1 <= num_heads <= model_dim:
            raise ValueError(f"not a GPT state dict ({num_heads} attention heads, blocks.0.attn.q_gain, for a width "
                             f"of {model_dim})")
        head_dim = model_dim // num_heads
        inferred = dict(
            vocab_size=int(vocab_size),
            num_layers=int(num_layers),
            model_dim=int(model_dim),
            num_heads=int(num_heads),
            num_kv_heads=int(kv_dim // head_dim),
            mlp_mult=int(hidden // model_dim),
            tie_embeddings="lm_head.weight" not in sd,
        )
        inferred.update(overrides)
        return cls(**inferred)
