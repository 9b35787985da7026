"""The Parameter Golf baseline GPT (openai/parameter-golf ``train_gpt.py``), module for module.

Parameter names and shapes match the challenge's script exactly, so a ``final_model.pt`` it
saved loads here with ``strict=True`` and back. Two additions, both inert by default:

* ``CastedLinear.weight_fn`` / ``GPT.head_weight_fn``: an optional function applied to the
  weight before the matmul. Quantization-aware training installs the codec's fake quantizer
  here (see ``golfpack.trainer.qat``); with ``None`` the forward pass is the challenge's.
* ``GPT.logits``: the soft-capped logits, which exact scoring needs per token.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .anatomy import is_control
from .config import GPTConfig

DEFAULT_CONFIG = GPTConfig().to_dict()

WeightFn = Callable[[Tensor], Tensor]

class RMSNorm(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (x.size(-1),))


class CastedLinear(nn.Linear):
    """fp32 master weights, cast to the activation dtype at matmul time (bf16 under autocast)."""

    weight_fn: Optional[WeightFn] = None

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight if self.weight_fn is None else self.weight_fn(self.weight)
        return F.linear(x, w.to(x.dtype))


class Rotary(nn.Module):
    def __init__(self, dim: int, base: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._cache: tuple[int, torch.device, Tensor, Tensor] | None = None

    def forward(self, seq_len: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        if self._cache is None or self._cache[0] != seq_len or self._cache[1] != device:
            t = torch.arange(seq_len, device=device, dtype=self.inv_freq.dtype)
            freqs = torch.outer(t, self.inv_freq.to(device))
            self._cache = (seq_len, device, freqs.cos()[None, None], freqs.sin()[None, None])
        return self._cache[2].to(dtype), self._cache[3].to(dtype)


def apply_rotary_emb(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos + x2 * sin, x1 * (-sin) + x2 * cos), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        dim, kv_dim = cfg.model_dim, cfg.num_kv_heads * cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.c_q = CastedLinear(dim, dim, bias=False)
        self.c_k = CastedLinear(dim, kv_dim, bias=False)
        self.c_v = CastedLinear(dim, kv_dim, bias=False)
        self.proj = CastedLinear(dim, dim, bias=False)
        self.proj._zero_init = True
        self.q_gain = nn.Parameter(torch.full((cfg.num_heads,), cfg.qk_gain_init, dtype=torch.float32))
        self.rotary = Rotary(cfg.head_dim, cfg.rope_base)

    def forward(self, x: Tensor) -> Tensor:
        bsz, seqlen, dim = x.shape
        q = self.c_q(x).reshape(bsz, seqlen, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.c_k(x).reshape(bsz, seqlen, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.c_v(x).reshape(bsz, seqlen, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = F.rms_norm(q, (q.size(-1),))
        k = F.rms_norm(k, (k.size(-1),))
        cos, sin = self.rotary(seqlen, x.device, q.dtype)
        q = apply_rotary_emb(q, cos, sin) * self.q_gain.to(q.dtype)[None, :, None, None]
        k = apply_rotary_emb(k, cos, sin)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, enable_gqa=self.num_kv_heads != self.num_heads
        )
        return self.proj(y.transpose(1, 2).contiguous().reshape(bsz, seqlen, dim))


class MLP(nn.Module):
    """relu^2 MLP (modded-nanogpt)."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        hidden = cfg.mlp_mult * cfg.model_dim
        self.fc = CastedLinear(cfg.model_dim, hidden, bias=False)
        self.proj = CastedLinear(hidden, cfg.model_dim, bias=False)
        self.proj._zero_init = True

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(torch.relu(self.fc(x)).square())


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        dim = cfg.model_dim
        self.attn_norm = RMSNorm()
        self.mlp_norm = RMSNorm()
        self.attn = CausalSelfAttention(cfg)
        self.mlp = MLP(cfg)
        self.attn_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.mlp_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(dim), torch.zeros(dim))).float())

    def forward(self, x: Tensor, x0: Tensor) -> Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0][None, None, :] * x + mix[1][None, None, :] * x0
        x = x + self.attn_scale.to(x.dtype)[None, None, :] * self.attn(self.attn_norm(x))
        return x + self.mlp_scale.to(x.dtype)[None, None, :] * self.mlp(self.mlp_norm(x))


class GPT(nn.Module):
    head_weight_fn: Optional[WeightFn] = None

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        self.num_encoder_layers = cfg.num_layers // 2
        self.num_decoder_layers = cfg.num_layers - self.num_encoder_layers
        num_skip = min(self.num_encoder_layers, self.num_decoder_layers)
        self.skip_weights = nn.Parameter(torch.ones(num_skip, cfg.model_dim, dtype=torch.float32))
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.num_layers)])
        self.final_norm = RMSNorm()
        self.lm_head = None if cfg.tie_embeddings else CastedLinear(cfg.model_dim, cfg.vocab_size, bias=False)
        if self.lm_head is not None:
            self.lm_head._zero_init = True
        self._init_weights()

    def _init_weights(self) -> None:
        if self.cfg.tie_embeddings:
            nn.init.normal_(self.tok_emb.weight, mean=0.0, std=self.cfg.tied_embed_init_std)
        for module in self.modules():
            if isinstance(module, nn.Linear) and getattr(module, "_zero_init", False):
                nn.init.zeros_(module.weight)

    def hidden(self, input_ids: Tensor) -> Tensor:
        """Final-normed hidden states, the input of the output projection."""
        x = F.rms_norm(self.tok_emb(input_ids), (self.cfg.model_dim,))
        x0, skips = x, []
        for i in range(self.num_encoder_layers):
            x = self.blocks[i](x, x0)
            skips.append(x)
        for i in range(self.num_decoder_layers):
            if skips:
                x = x + self.skip_weights[i].to(x.dtype)[None, None, :] * skips.pop()
            x = self.blocks[self.num_encoder_layers + i](x, x0)
        return self.final_norm(x)

    def head(self, h: Tensor) -> Tensor:
        """Soft-capped logits from hidden states."""
        if self.lm_head is not None:
            proj = self.lm_head(h)
        else:
            w = self.tok_emb.weight if self.head_weight_fn is None else self.head_weight_fn(self.tok_emb.weight)
            proj = F.linear(h, w.to(h.dtype))
        return self.cfg.logit_softcap * torch.tanh(proj / self.cfg.logit_softcap)

    @property
    def vocab_size(self) -> int:
        return self.cfg.vocab_size

    def logits(self, input_ids: Tensor) -> Tensor:
        return self.head(self.hidden(input_ids))

    def forward(self, input_ids: Tensor, target_ids: Tensor) -> Tensor:
        """Mean token cross-entropy, exactly as the challenge's training forward."""
        logits = self.logits(input_ids).reshape(-1, self.cfg.vocab_size)
        return F.cross_entropy(logits.float(), target_ids.reshape(-1), reduction="mean")


def build(config: dict) -> GPT:
    """The model builder golfpack uses unless told otherwise (``model.builders.GPT_BUILDER``)."""
    return GPT(GPTConfig.from_dict(config))


def restore_low_dim_params_to_fp32(model: nn.Module) -> None:
    """Keep small/control parameters in fp32 when the body is cast to bf16 (challenge behaviour)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if is_control(name, p) and p.dtype != torch.float32:
                p.data = p.data.float()
