"""The per-row symmetric integer format: its grid, its rounding and its dequantization.

``w[r, :] = q[r, :] * scale[r]`` with integer symbols ``|q| <= qmax(bits)`` and fp16 scales.
One definition serves the round-to-nearest and GPTQ encoders, the decoder and the trainer's
fake quantization, so a model trained with QAT sees exactly the grid it is exported on (which
is why the grid ships: the trainer inside an artifact uses it). The rounding always divides
by the fp16 scale, so encode and decode agree bit for bit.

Scale rules (``clip=``), each giving a per-row clip value ``c`` and ``scale = c / qmax``:

* ``absmax``: ``c = max |w|`` of the row;
* ``percentile:P``: ``c`` = the P-th percentile of ``|w|`` in the row;
* ``sdclip:K``: ``c = K * std(row)`` (sample std), symbols clamped to ``±qmax``: the Parameter
  Golf records' rule (``gptq_quantize_weight``), reproduced bit for bit;
* ``sdcap:K``: ``c = min(K * std(row), max |w|)`` (population std), capped at the row's absmax
  so it never widens the grid beyond absmax;
* ``mse`` or ``mse:N``: the best of N candidates ``c = f * absmax`` (f from 0.5 to 1) by
  squared reconstruction error, chosen per row.

Column scales (param ``cols = 1``, side stream ``cols``): a matrix may carry one fp16 scale per
column, and decodes to ``(q * scale[r]) * col[c]``: the step of every entry is its row's times
its column's. Why: a layer's error costs ``E H E^T``, and where a few input dimensions are driven
far harder than the rest (the "massive activations" of trained transformers: on a small GPT the
final hidden state puts 98 % of its energy in two of 128 dimensions), one step per row spends
the same precision on columns whose error costs thousands of times more than others'. A column
step ``~ H_jj^(-p/2)`` moves precision to them (the encoder's choice of ``p``: encoders/intq.py).

Low-rank error correction (LQER, param ``lqer = r``, side stream ``lqer``): a matrix may carry
factors ``A`` (rows x r) and ``B`` (r x cols) of its quantization error, each int8 with one
fp16 scale per row, and decodes to ``q * scale + A @ B``. Stream layout: ``A`` symbols
(row-major), ``B`` symbols, ``A``'s scales, ``B``'s scales. Why: the error that matters is
``E H E^T`` (H: the Hessian of the layer's inputs), and where a few input directions dominate
H, a few singular directions hold most of it (docs/stages.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .base import DecodeError, TensorMeta, blob, param

MIN_BITS, MAX_BITS = 2, 8
MAX_LQER_RANK = 64
FP16_TINY = 2.0**-24  # smallest positive fp16: scales never round to zero
FP16_MAX = 65504.0


def qmax(bits: int) -> int:
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits must be in {MIN_BITS}..{MAX_BITS}, got {bits}")
    return (1 << (bits - 1)) - 1


def rows_of(shape: tuple[int, ...]) -> int:
    """Matrices quantize per output row; vectors and scalars as a single row."""
    return shape[0] if len(shape) >= 2 else 1


def grid_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(rows, columns)`` of the per-row grid (explicit, so empty tensors reshape too)."""
    rows, numel = rows_of(shape), 1
    for d in shape:
        numel *= d
    return rows, numel // rows if rows else 0


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


def dequantize(q: torch.Tensor, scales: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype,
               col_scales: torch.Tensor | None = None) -> torch.Tensor:
    """``q * scales[r]`` (then ``* col_scales[c]``, given column scales), as ``shape`` in ``dtype``."""
    rows, cols = grid_shape(shape)
    w = q.reshape(rows, cols).to(torch.float32) * scales.to(torch.float32).reshape(rows, 1)
    if col_scales is not None:
        w = w * col_scales.to(torch.float32).reshape(1, cols)
    return w.reshape(shape).to(dtype)


def fake_quantize(w: torch.Tensor, bits: int, rule: ClipRule, cols: torch.Tensor | None = None) -> torch.Tensor:
    """Quantize-dequantize in the forward pass, identity gradient (straight-through); ``cols``:
    column scales (the grid codes ``w / cols``)."""
    with torch.no_grad():
        scaled = w if cols is None else as_rows(w) / cols[None, :]
        q, scales = quantize_rtn(scaled, bits, rule)
        dq = dequantize(q, scales, tuple(w.shape), w.dtype, cols)
    return w + (dq - w).detach()


def noise_quantize(w: torch.Tensor, bits: int, rule: ClipRule, width: float,
                   cols: torch.Tensor | None = None) -> torch.Tensor:
    """Pseudo-quantization noise (DiffQ, Defossez et al. 2021): ``w`` plus uniform noise ``width``
    grid steps wide, identity gradient. The forward pass sees an error of the grid's scale while
    the weights never snap to it, so a weight near a rounding boundary does not flip between
    two grid points from step to step. ``cols``: column scales (each step is its row's times
    its column's)."""
    with torch.no_grad():
        rows = as_rows(w)
        if cols is None:
            step = row_scales(rows, bits, rule).float()[:, None]
        else:
            step = row_scales(rows / cols[None, :], bits, rule).float()[:, None] * cols[None, :]
        noise = (torch.rand_like(rows) - 0.5).mul_(step * width)
    return w + noise.reshape(w.shape).to(w.dtype)


def decode(symbols: np.ndarray, params: dict, blobs: dict, meta: TensorMeta) -> torch.Tensor:
    bits = param(params, "bits", int, MIN_BITS, MAX_BITS)
    m = qmax(bits)
    if symbols.size != meta.numel:
        raise DecodeError(f"{symbols.size} symbols for {meta.numel} elements")
    if symbols.size and (symbols.min() < -m or symbols.max() > m):
        raise DecodeError(f"symbol outside the {bits}-bit range ±{m}")
    raw = blob(blobs, "scales")
    rows = rows_of(meta.shape)
    if len(raw) != 2 * rows:
        raise DecodeError(f"scales stream has {len(raw)} bytes, expected {2 * rows}")
    scales = torch.from_numpy(np.frombuffer(raw, dtype="<f2").astype(np.float16))
    if not torch.isfinite(scales).all():
        raise DecodeError("non-finite scale")
    q = torch.from_numpy(symbols.astype(np.int32, copy=False))
    col_scales = None
    if "cols" in params:
        param(params, "cols", int, 1, 1)  # the only value: a flag that the stream is there
        col_scales = read_col_scales(blob(blobs, "cols"), meta.shape)
    if "lqer" not in params:
        return dequantize(q, scales, meta.shape, getattr(torch, meta.dtype), col_scales)
    rank = param(params, "lqer", int, 1, MAX_LQER_RANK)
    rows, cols = grid_shape(meta.shape)
    if len(meta.shape) != 2 or rank > min(rows, cols):
        raise DecodeError(f"rank-{rank} correction of a tensor of shape {list(meta.shape)}")
    a, sa, b, sb = read_lqer(blob(blobs, "lqer"), rows, cols, rank)
    w = dequantize(q, scales, meta.shape, torch.float32, col_scales) + lqer_product(a, sa, b, sb)
    return w.to(getattr(torch, meta.dtype))


def read_col_scales(raw: bytes, shape: tuple[int, ...]) -> torch.Tensor:
    """A matrix's fp16 column scales: one per column, finite."""
    if len(shape) != 2:
        raise DecodeError(f"column scales for a tensor of shape {list(shape)}")
    if len(raw) != 2 * shape[1]:
        raise DecodeError(f"cols stream has {len(raw)} bytes, expected {2 * shape[1]}")
    cols = torch.from_numpy(np.frombuffer(raw, dtype="<f2").astype(np.float16))
    if not torch.isfinite(cols).all():
        raise DecodeError("non-finite column scale")
    return cols


def lqer_product(a: torch.Tensor, sa: torch.Tensor, b: torch.Tensor, sb: torch.Tensor) -> torch.Tensor:
    """``A @ B`` from int8 factors and their fp16 row scales, in float32 (encoder and decoder;
    contiguous operands, so both take the same matmul kernel and agree bit for bit)."""
    return (dequantize(a, sa, tuple(a.shape), torch.float32).contiguous()
            @ dequantize(b, sb, tuple(b.shape), torch.float32).contiguous())


def lqer_size(rows: int, cols: int, rank: int) -> int:
    return rank * (rows + cols) + 2 * (rows + rank)


def read_lqer(raw: bytes, rows: int, cols: int, rank: int) -> tuple[torch.Tensor, ...]:
    if len(raw) != lqer_size(rows, cols, rank):
        raise DecodeError(f"lqer stream has {len(raw)} bytes, expected {lqer_size(rows, cols, rank)}")
    buf = np.frombuffer(raw, dtype=np.uint8)
    na, nb = rows * rank, rank * cols
    a = torch.from_numpy(buf[:na].view(np.int8).astype(np.int8).reshape(rows, rank))
    b = torch.from_numpy(buf[na : na + nb].view(np.int8).astype(np.int8).reshape(rank, cols))
    scales = torch.from_numpy(buf[na + nb :].view("<f2").astype(np.float16))
    if not torch.isfinite(scales).all():
        raise DecodeError("non-finite lqer scale")
    return a, scales[:rows], b, scales[rows:]
