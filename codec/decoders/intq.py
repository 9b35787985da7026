"""The per-row symmetric integer format and its dequantization (the decoder of ``rtn`` and
``gptq``).

``w[r, :] = q[r, :] * scale[r]`` with integer symbols ``|q| <= qmax(bits)`` and fp16 scales.
How a row's scale is chosen and a weight rounded onto the grid is ``grid.py``: the encoders and
the trainer's fake quantization need it, a decoder does not.

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

import numpy as np
import torch

from .base import FLOAT_WIDTH, DecodeError, TensorMeta, blob, param

MIN_BITS, MAX_BITS = 2, 8
MAX_LQER_RANK = 64


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


def dequantize(q: torch.Tensor, scales: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype,
               col_scales: torch.Tensor | None = None) -> torch.Tensor:
    """``q * scales[r]`` (then ``* col_scales[c]``, given column scales), as ``shape`` in ``dtype``."""
    rows, cols = grid_shape(shape)
    w = q.reshape(rows, cols).to(torch.float32) * scales.to(torch.float32).reshape(rows, 1)
    if col_scales is not None:
        w = w * col_scales.to(torch.float32).reshape(1, cols)
    return w.reshape(shape).to(dtype)


def decode(symbols: np.ndarray, params: dict, blobs: dict, meta: TensorMeta) -> torch.Tensor:
    if meta.dtype not in FLOAT_WIDTH:
        raise DecodeError(f"a grid decodes to floats, not {meta.dtype}")
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
