"""Per-row symmetric integer quantization: the scale rules and the rounding.

One definition serves three callers: the round-to-nearest stage, GPTQ (column by column)
and the trainer's fake quantization, so a model trained with QAT sees exactly the grid it
is exported on. Scales are stored as fp16; the rounding always divides by the fp16 value, so
encode and decode agree bit for bit.

Scale rules (``clip=``), each giving a per-row clip value ``c`` and ``scale = c / qmax``:

* ``absmax``: ``c = max |w|`` of the row;
* ``percentile:P``: ``c`` = the P-th percentile of ``|w|`` in the row;
* ``sdclip:K``: ``c = K * std(row)``;
* ``mse`` or ``mse:N``: the best of N candidates ``c = f * absmax`` (f from 0.5 to 1) by
  squared reconstruction error, chosen per row.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .decoders.intq import dequantize, rows_of

FP16_TINY = 2.0**-24  # smallest positive fp16: scales never round to zero
FP16_MAX = 65504.0


def qmax(bits: int) -> int:
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in 2..8, got {bits}")
    return (1 << (bits - 1)) - 1


@dataclass(frozen=True)
class ClipRule:
    kind: str = "absmax"
    value: float = 0.0

    @classmethod
    def parse(cls, text: str) -> "ClipRule":
        kind, _, arg = str(text).partition(":")
        try:
            if kind == "absmax" and not arg:
                return cls("absmax")
            if kind == "percentile" and 0 < float(arg) <= 100:
                return cls("percentile", float(arg))
            if kind == "sdclip" and float(arg) > 0:
                return cls("sdclip", float(arg))
            if kind == "mse":
                n = int(arg) if arg else 20
                if n >= 2:
                    return cls("mse", float(n))
        except ValueError:
            pass
        raise ValueError(f"unknown clip rule '{text}' (absmax, percentile:P, sdclip:K, mse[:N])")

    def __str__(self) -> str:
        if self.kind == "absmax":
            return "absmax"
        return f"{self.kind}:{int(self.value) if self.kind == 'mse' else self.value:g}"


def as_rows(w: torch.Tensor) -> torch.Tensor:
    return w.detach().reshape(rows_of(tuple(w.shape)), -1).float()


def to_fp16_scale(clip: torch.Tensor, bits: int) -> torch.Tensor:
    return (clip / qmax(bits)).clamp(FP16_TINY, FP16_MAX).to(torch.float16)


def round_to_grid(w: torch.Tensor, scale16: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer symbols for ``w`` on the grid ``scale16`` (broadcast), in int8."""
    m = qmax(bits)
    return torch.clamp(torch.round(w / scale16.float()), -m, m).to(torch.int8)


def row_scales(w: torch.Tensor, bits: int, rule: ClipRule) -> torch.Tensor:
    """fp16 per-row scales of ``w`` under ``rule``."""
    rows = as_rows(w)
    absmax = rows.abs().amax(dim=1)
    if rule.kind == "absmax":
        return to_fp16_scale(absmax, bits)
    if rule.kind == "percentile":
        return to_fp16_scale(torch.quantile(rows.abs(), rule.value / 100.0, dim=1), bits)
    if rule.kind == "sdclip":
        std = rows.std(dim=1, unbiased=False) if rows.shape[1] > 1 else rows.abs().amax(dim=1)
        return to_fp16_scale(torch.minimum(rule.value * std, absmax), bits)
    fractions = torch.linspace(0.5, 1.0, int(rule.value))
    best_err = torch.full_like(absmax, float("inf"))
    best = to_fp16_scale(absmax, bits)
    for f in fractions:
        s = to_fp16_scale(absmax * f, bits)
        err = (rows - round_to_grid(rows, s[:, None], bits).float() * s.float()[:, None]).square().sum(dim=1)
        better = err < best_err
        best = torch.where(better, s, best)
        best_err = torch.where(better, err, best_err)
    return best


def quantize_rtn(w: torch.Tensor, bits: int, rule: ClipRule) -> tuple[torch.Tensor, torch.Tensor]:
    """Round-to-nearest: ``(symbols[rows, cols] int8, scales[rows] fp16)``."""
    scales = row_scales(w, bits, rule)
    return round_to_grid(as_rows(w), scales[:, None], bits), scales


def fake_quantize(w: torch.Tensor, bits: int, rule: ClipRule) -> torch.Tensor:
    """Quantize-dequantize in the forward pass, identity gradient (straight-through)."""
    with torch.no_grad():
        q, scales = quantize_rtn(w, bits, rule)
        dq = dequantize(q, scales, tuple(w.shape), w.dtype)
    return w + (dq - w).detach()
