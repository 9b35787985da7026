"""The per-row grid's encode side: each row's fp16 scale by a clip rule, and rounding onto it.

One definition serves the round-to-nearest and GPTQ encoders and the trainer's fake
quantization, so a model trained with QAT sees exactly the grid it is exported on (which is
why it ships: the trainer inside an artifact uses it). The rounding always divides by the fp16
scale, so encode and decode (``intq.py``) agree bit for bit.

Scale rules (``clip=``), each giving a per-row clip value ``c`` and ``scale = c / qmax``:

* ``absmax``: ``c = max |w|`` of the row;
* ``percentile:P``: ``c`` = the P-th percentile of ``|w|`` in the row;
* ``sdclip:K``: ``c = K * std(row)`` (sample std), symbols clamped to ``±qmax``: the Parameter
  Golf records' rule (``gptq_quantize_weight``), reproduced bit for bit;
* ``sdcap:K``: ``c = min(K * std(row), max |w|)`` (population std), capped at the row's absmax
  so it never widens the grid beyond absmax;
* ``mse`` or ``mse:N``: the best of N candidates ``c = f * absmax`` (f from 0.5 to 1) by
  squared reconstruction error, chosen per row.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .intq import grid_shape, qmax

FP16_TINY = 2.0**-24  # smallest positive fp16: scales never round to zero
FP16_MAX = 65504.0


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
            if kind in ("sdclip", "sdcap") and 0 < float(arg) < float("inf"):
                return cls(kind, float(arg))
            if kind == "mse":
                n = int(arg) if arg else 20
                if 2 <= n <= 1000:
                    return cls("mse", float(n))
        except ValueError:
            pass
        raise ValueError(f"unknown clip rule '{text}' (absmax, percentile:P, sdclip:K, sdcap:K, mse[:N])")

    def __str__(self) -> str:
        if self.kind == "absmax":
            return "absmax"
        return f"{self.kind}:{int(self.value) if self.kind == 'mse' else self.value:g}"


def as_rows(w: torch.Tensor) -> torch.Tensor:
    return w.detach().reshape(grid_shape(tuple(w.shape))).float()


def to_fp16_scale(clip: torch.Tensor, bits: int) -> torch.Tensor:
    return (clip / qmax(bits)).clamp(FP16_TINY, FP16_MAX).to(torch.float16)


def round_to_grid(w: torch.Tensor, scale16: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer symbols for ``w`` on the grid ``scale16`` (broadcast), in int8."""
    m = qmax(bits)
    return torch.clamp(torch.round(w / scale16.float()), -m, m).to(torch.int8)


def row_scales(w: torch.Tensor, bits: int, rule: ClipRule) -> torch.Tensor:
    """fp16 per-row scales of ``w`` under ``rule``."""
    rows = as_rows(w)
    absmax = rows.abs().amax(dim=1) if rows.numel() else torch.zeros(rows.shape[0])
    if rule.kind == "absmax" or rows.shape[1] == 0:
        return to_fp16_scale(absmax, bits)
    if rule.kind == "percentile":
        return to_fp16_scale(torch.quantile(rows.abs(), rule.value / 100.0, dim=1), bits)
    if rule.kind == "sdclip":
        std = rows.std(dim=1) if rows.shape[1] > 1 else absmax
        return to_fp16_scale(rule.value * std, bits)
    if rule.kind == "sdcap":
        std = rows.std(dim=1, unbiased=False) if rows.shape[1] > 1 else absmax
        return to_fp16_scale(torch.minimum(rule.value * std, absmax), bits)
    best_err = torch.full_like(absmax, float("inf"))
    best = to_fp16_scale(absmax, bits)
    for f in torch.linspace(0.5, 1.0, int(rule.value)):
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
