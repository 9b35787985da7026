"""The #1 record's export, reimplemented for comparison (openai/parameter-golf,
``records/track_10min_16mb/2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611``,
``gptq_mixed_quantize``, ``_lqer_pack_asym`` and ``_serialize_pergroup``), on the same
checkpoint and Hessians that golfpack compresses, so that ``bench rd`` and ``bench coders``
compare with it in one run.

* :func:`record_export`: GPTQ int6 SDClip k on the block matrices, int7 SDClip k_emb on the
  embedding, fp16 for the rest, one brotli-11 stream (the earlier records' recipe);
* :func:`record_export_full`: the #1 record as run: per-class clips (attention 13.0, MLP 11.5,
  other matrices 12.85, embedding int7 14.0: its run command's settings), its LQER (rank 4 on
  the three matrices of largest error norm; ``A`` as INT2 with one fp16 scale, ``B`` as INT4 in
  groups of 64 with fp16 scales), and its bytes both as one brotli-11 stream and, when the
  ``lrzip`` program is installed, as its per-group coding (each tensor group's symbols,
  similarity-sorted rows for the embedding, ``c_q`` and ``fc``, transposed, ``lrzip -z -L 9``;
  the rest brotli-11).

The record passes matrices of at most 65,536 elements through as fp16; at the small widths
benchmarked here that would leave the attention unquantized, so every matrix with a Hessian
is quantized. Classes go by the record's name rules (``.attn.``, ``.mlp.``); a model with other
names has its embedding found by its role.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...codec.decoders.grid import quantize_rtn

from ...codec.decoders.intq import dequantize
from ...codec.encoders.intq import GPTQParams
from ...codec.gptq import gptq_quantize
from ...codec.decoders.config import EMBEDDING

ATTN_CLIP, MLP_CLIP, MATRIX_CLIP, EMBED_CLIP = 13.0, 11.5, 12.85, 14.0  # the run's MLP_CLIP_SIGMAS etc.
LQER_TOP_K, LQER_RANK, LQER_GROUP = 3, 4, 64
GROUPS = ("tok_emb", "attn.c_k", "attn.c_q", "attn.c_v", "attn.proj", "mlp.fc", "mlp.proj")  # _GROUP_ORDER
SIMSORT = ("tok_emb", "attn.c_q", "mlp.fc")  # _SIMSORT_KEYS


def record_quantize(name: str, w: torch.Tensor, hessian: torch.Tensor | None, k: float = 12.85, k_emb: float = 14.0,
                    bits: int = 6, emb_bits: int = 7, embedding: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The record's grid for one matrix, ``(symbols, fp16 scales)``: int6 SDClip k, or int7 SDClip
    k_emb for the embedding (its ``"tok_emb" in name`` rule, or ``embedding``: the tensor's role,
    for a model with other names). GPTQ with the Hessian, as the record does; round-to-nearest
    on the same grid for weights that come without one."""
    emb = "tok_emb" in name if embedding is None else embedding
    params = GPTQParams(bits=emb_bits if emb else bits, clip=f"sdclip:{k_emb if emb else k}")
    if hessian is None:
        return quantize_rtn(w, params.bits, params.rule)
    return gptq_quantize(w, hessian, params)


def fp16_passthrough(t: torch.Tensor) -> tuple[bytes, torch.Tensor]:
    """A tensor the record does not quantize: its fp16 bytes and what they decode to."""
    half = t.detach().to(torch.float16)
    return half.numpy().tobytes(), half.to(t.dtype)


def record_export(state: dict[str, torch.Tensor], hessians: dict[str, torch.Tensor], k: float = 12.85,
                  k_emb: float = 14.0, roles: dict[str, str] | None = None) -> tuple[int, dict[str, torch.Tensor]]:
    """The record recipe: ``(weight bytes, dequantized state dict)``; ``roles`` (tensor roles)
    find the embedding of a model whose names are not the baseline's."""
    import brotli

    parts, out = [], {}
    for name, t in state.items():
        if t.ndim != 2 or name not in hessians:
            raw, out[name] = fp16_passthrough(t)
            parts.append(raw)
            continue
        q, s = record_quantize(name, t, hessians[name], k, k_emb,
                               embedding=None if roles is None else roles.get(name) == EMBEDDING)
        parts += [q.numpy().astype(np.int8).tobytes(), s.numpy().astype("<f2").tobytes()]
        out[name] = dequantize(q, s, tuple(t.shape), t.dtype)
    return len(brotli.compress(b"".join(parts), quality=11)), out


def _is_embedding(name: str, roles: dict[str, str] | None) -> bool:
    return "tok_emb" in name if roles is None else roles.get(name) == EMBEDDING


def class_clip(name: str, embedding: bool) -> float:
    if embedding:
        return EMBED_CLIP
    return MLP_CLIP if ".mlp." in name else ATTN_CLIP if ".attn." in name else MATRIX_CLIP


def lqer_asym(err: torch.Tensor) -> tuple[list[np.ndarray], torch.Tensor]:
    """The record's rank-4 correction of ``err``: its packed parts and the product it adds.
    ``B`` is INT4 in groups of 64 where its size allows, else both factors INT4 per row."""
    u, s, vh = torch.linalg.svd(err, full_matrices=False)
    r = min(LQER_RANK, s.numel())
    a, b = (u[:, :r] * s[:r]).contiguous(), vh[:r, :].contiguous()
    if b.numel() % LQER_GROUP == 0:
        sa = (a.abs().amax().clamp_min(1e-10) / 1.5).to(torch.float16)
        qa = torch.clamp(torch.round(a / sa.float()), -2, 1)
        bf = b.reshape(-1, LQER_GROUP)
        sb = (bf.abs().amax(dim=-1, keepdim=True).clamp_min(1e-10) / 7.5).to(torch.float16).reshape(-1)
        qb = torch.clamp(torch.round(bf / sb.float().reshape(-1, 1)), -8, 7).reshape(b.shape)
        product = (qa * sa.float()) @ (qb.reshape(-1, LQER_GROUP) * sb.float().reshape(-1, 1)).reshape(b.shape)
        sa_np = sa.reshape(1).numpy()
    else:
        sa = (a.abs().amax(dim=1).clamp_min(1e-10) / 7).to(torch.float16)
        sb = (b.abs().amax(dim=1).clamp_min(1e-10) / 7).to(torch.float16)
        qa = torch.clamp(torch.round(a / sa.float().view(-1, 1)), -7, 7)
        qb = torch.clamp(torch.round(b / sb.float().view(-1, 1)), -7, 7)
        product = (qa * sa.float().view(-1, 1)) @ (qb * sb.float().view(-1, 1))
        sa_np = sa.numpy()
    parts = [qa.numpy().astype(np.int8), sa_np.astype("<f2"), qb.numpy().astype(np.int8), sb.numpy().astype("<f2")]
    return parts, product


def similarity_order(m: np.ndarray) -> np.ndarray:
    """The record's greedy row order: each next row the nearest (L1) unused one to the last."""
    used = np.zeros(m.shape[0], dtype=bool)
    order, used[0], cur = [0], True, m[0].astype(np.float32)
    for _ in range(m.shape[0] - 1):
        rest = np.flatnonzero(~used)
        best = rest[np.argmin(np.abs(m[rest].astype(np.float32) - cur).sum(1))]
        order.append(int(best))
        used[best], cur = True, m[best].astype(np.float32)
    return np.array(order, dtype=np.uint16)


def lrzip_bytes(data: bytes) -> int:
    with tempfile.TemporaryDirectory() as d:
        src = Path(d, "g.bin")
        src.write_bytes(data)
        subprocess.run(["lrzip", "-z", "-L", "9", "-q", "-o", str(src) + ".lrz", str(src)], check=True,
                       capture_output=True)
        return Path(str(src) + ".lrz").stat().st_size


@dataclass
class RecordExport:
    brotli_bytes: int  # everything as one brotli-11 stream
    pergroup_bytes: int | None  # the record's per-group lrzip coding (None without lrzip)
    state: dict[str, torch.Tensor]  # the dequantized weights
    corrected: list[str]  # the matrices LQER corrected


def record_export_full(state: dict[str, torch.Tensor], hessians: dict[str, torch.Tensor],
                       roles: dict[str, str] | None = None) -> RecordExport:
    """The #1 record as run (module docstring)."""
    import brotli

    symbols: dict[str, np.ndarray] = {}
    rest: list[bytes] = []
    out, errors = {}, {}
    for name, t in state.items():
        if t.ndim != 2 or name not in hessians:
            raw, out[name] = fp16_passthrough(t)
            rest.append(raw)
            continue
        emb = _is_embedding(name, roles)
        q, s = gptq_quantize(t, hessians[name], GPTQParams(bits=7 if emb else 6, clip=f"sdclip:{class_clip(name, emb):g}"))
        symbols[name] = q.numpy().astype(np.int8)
        rest.append(s.numpy().astype("<f2").tobytes())
        out[name] = dequantize(q, s, tuple(t.shape), torch.float32)
        errors[name] = t.float() - out[name]
    corrected = sorted(errors, key=lambda n: -float(errors[n].norm()))[:LQER_TOP_K]
    for name in corrected:
        parts, product = lqer_asym(errors[name])
        rest += [p.tobytes() for p in parts]
        out[name] = out[name] + product
    out = {n: v.to(state[n].dtype) for n, v in out.items()}
    one_stream = len(brotli.compress(b"".join(v.tobytes() for v in symbols.values()) + b"".join(rest), quality=11))
    if shutil.which("lrzip") is None:
        return RecordExport(one_stream, None, out, corrected)
    grouped: dict[str, list[np.ndarray]] = {}
    for name, q in symbols.items():
        key = next((g for g in GROUPS if (g == "tok_emb" and _is_embedding(name, roles)) or name.endswith(f"{g}.weight")),
                   None)
        if key is None:
            rest.append(q.tobytes())
            continue
        if key in SIMSORT:
            order = similarity_order(q)
            rest.append(order.tobytes())
            q = q[order]
        grouped.setdefault(key, []).append(np.ascontiguousarray(q.T))
    pergroup = sum(lrzip_bytes(b"".join(a.tobytes() for a in arrays)) for arrays in grouped.values())
    return RecordExport(one_stream, pergroup + len(brotli.compress(b"".join(rest), quality=11)), out, corrected)
