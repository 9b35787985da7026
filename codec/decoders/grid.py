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
from typing import Sequence

import torch

from .intq import MAX_BITS, MIN_BITS, grid_shape, qmax

FP16_TINY = 2.0**-24  # smallest positive fp16: scales never round to zero
FP16_MAX = 65504.0
MAX_PATTERN = 1000  # characters in a grid rule's glob
MAX_COLUMNS = 1 << 16  # a grid rule's column scales (a checkpoint's rules are read back: bounded)


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


@dataclass(frozen=True)
class Grid:
    """A quantization grid: ``bits`` per value (0: none, the weight is left alone) on the
    per-row grid whose scales ``clip`` (a :class:`ClipRule`'s text) sets, of ``w / cols`` when
    ``colscale`` > 0 (column scales at that power of the Hessian's diagonal, ``intq.py``). The
    one spelling of a grid: the allocator's candidates (``Candidate.grid``), budget-aware QAT's
    plan and rules, and a checkpoint's plan."""

    bits: int
    clip: str = "absmax"
    colscale: float = 0.0

    @property
    def clip_rule(self) -> ClipRule:
        return ClipRule.parse(self.clip)

    def rule(self, pattern: str, cols: Sequence[float] = ()) -> list:
        """The list form (a config's ``qat_rules``, a checkpoint's ``qat_plan``, a resume state):
        ``[glob, bits, clip]``, and ``colscale, cols`` when the grid has column scales;
        :func:`read_rule` is its one reader."""
        head = [pattern, self.bits, self.clip]
        return [*head, self.colscale, list(cols)] if cols else head


def read_rule(r: object) -> tuple[str, Grid, tuple[float, ...]]:
    """One rule in :meth:`Grid.rule`'s form, checked (it may come from an untrusted checkpoint):
    a bounded glob, bits 0 or a grid's, a clip rule (canonical text), and column scales: a power
    in (0, 1] and at most ``MAX_COLUMNS`` scales an fp16 column-scale stream can hold (a scale
    of 1e300 would train the weights to NaN)."""
    ok = isinstance(r, (list, tuple)) and len(r) in (3, 5) and isinstance(r[0], str) and len(r[0]) <= MAX_PATTERN \
        and type(r[1]) is int and (r[1] == 0 or MIN_BITS <= r[1] <= MAX_BITS) \
        and (isinstance(r[2], ClipRule) or isinstance(r[2], str) and len(r[2]) <= 32)
    if not ok:
        raise ValueError(f"QAT rule {str(r)[:80]!r} must be [glob, bits, clip] or [glob, bits, clip, colscale, cols] "
                         f"(bits 0 or {MIN_BITS}..{MAX_BITS})")
    clip = str(ClipRule.parse(str(r[2])))
    if len(r) == 3:
        return r[0], Grid(r[1], clip), ()
    power, cols = r[3:]
    ok = type(power) in (int, float) and 0 < power <= 1 and isinstance(cols, (list, tuple)) \
        and 0 < len(cols) <= MAX_COLUMNS and all(type(c) in (int, float) and FP16_TINY <= c <= FP16_MAX for c in cols)
    if not ok:
        raise ValueError(f"QAT rule's column scales must be a power in (0, 1] and 1..{MAX_COLUMNS} numbers in "
                         f"[{FP16_TINY:g}, {FP16_MAX:g}]")
    return r[0], Grid(r[1], clip, float(power)), tuple(float(c) for c in cols)


def as_rows(w: torch.Tensor) -> torch.Tensor:
    return w.detach().reshape(grid_shape(tuple(w.shape))).float()


def to_fp16_scale(clip: torch.Tensor, bits: int) -> torch.Tensor:
    return (clip / qmax(bits)).clamp(FP16_TINY, FP16_MAX).to(torch.float16)


def round_to_grid(w: torch.Tensor, scale16: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer symbols for ``w`` on the grid ``scale16`` (broadcast), in int8."""
    m = qmax(bits)
    return torch.clamp(torch.round(w / scale16.float()), -m, m).to(torch.int8)


def row_scales(w: torch.Tensor, bits: int, rule: ClipRule, steps: torch.Tensor | None = None) -> torch.Tensor:
    """fp16 per-row scales of ``w`` under ``rule``, each times its row's ``steps`` when given
    (``encoders/intq.py: row_steps``: a coarser grid where the row's error costs less)."""
    scales = _rule_scales(w, bits, rule)
    return scales if steps is None else (scales.float() * steps).clamp(FP16_TINY, FP16_MAX).to(torch.float16)


def _rule_scales(w: torch.Tensor, bits: int, rule: ClipRule) -> torch.Tensor:
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


def quantize_rtn(w: torch.Tensor, bits: int, rule: ClipRule,
                 steps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Round-to-nearest: ``(symbols[rows, cols] int8, scales[rows] fp16)``."""
    scales = row_scales(w, bits, rule, steps)
    return round_to_grid(as_rows(w), scales[:, None], bits), scales
