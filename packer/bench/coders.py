"""``golfpack bench coders WEIGHTS``: lossless coders on the records' int6 symbols, side by side.

The symbols are the #1 record's export: int6 with SDClip k = 12.85 on every matrix, int7 with
k = 14 on the embedding; GPTQ with the checkpoint's calibration Hessians when they are beside
it, round-to-nearest on the same grid otherwise (a pretrained model from elsewhere has none).
Every coder sees the same symbols; the fp16 row scales, identical for all, are left out.

* ``H0``: order-0 entropy per tensor (the bound of any memoryless per-tensor coder);
* ``ans``, ``ctxans``: golfpack's per-tensor coders, tables and class ids included;
* ``brotli-11``: the records' compressor, over all int8 symbols as one stream;
* ``lrzip -z -L9``: the #1 record's per-group coder (ZPAQ), over the same stream, when the
  ``lrzip`` program is installed (Debian package ``lrzip``).

Times are encode + decode in this process (lrzip: its two subprocesses), and only their ratios
are reported as results.
"""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...codec.decoders.base import TensorMeta
from ...codec.entropy import order0_bits
from ...codec.registry import decoder_table, get_stage
from ...codec.stage import EncodeContext
from ..models import open_checkpoint
from ...codec.decoders.config import EMBEDDING
from ...trainer.calibration_files import calib_path, load_hessians
from ...trainer.roles import tensor_roles
from .record_recipe import record_quantize

SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16}


@dataclass
class CoderResult:
    coder: str
    bytes: int
    seconds: float | None  # encode + decode


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Float tensors of a .safetensors file (its format: u64 header length, JSON header, data)."""
    data = path.read_bytes()
    (n,) = struct.unpack_from("<Q", data)
    header = json.loads(data[8 : 8 + n])
    out = {}
    for name, info in sorted(header.items()):
        if name == "__metadata__" or info["dtype"] not in SAFETENSORS_DTYPES:
            continue
        a, b = info["data_offsets"]
        arr = np.frombuffer(data[8 + n + a : 8 + n + b], dtype=SAFETENSORS_DTYPES[info["dtype"]])
        out[name] = torch.from_numpy(arr.astype(np.float32).reshape(info["shape"]))
    return out


def load_bench_weights(path: Path, model: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor],
                                                                 dict[str, str] | None]:
    """``(state dict, Hessians, roles)``; Hessians only for a golfpack checkpoint with
    calibration, roles only for a checkpoint (``model``: the builder of one not trained with
    golfpack's GPT, as ``--model``)."""
    if path.suffix == ".safetensors":
        return load_safetensors(path), {}, None
    ckpt = open_checkpoint(path, model)
    state = {k: v.float() for k, v in ckpt.state_dict.items()}
    h = calib_path(path)
    return state, (load_hessians(h) if h.is_file() else {}), tensor_roles(ckpt.build_model())


def record_symbols(state: dict[str, torch.Tensor], hessians: dict[str, torch.Tensor],
                   roles: dict[str, str] | None = None) -> dict[str, torch.Tensor]:
    """The record's int6/int7 SDClip symbols of every matrix (flattened beyond the first dim);
    the embedding by its role, or by the record's name rule without roles."""
    out = {}
    for name, t in state.items():
        if t.ndim < 2 or t.numel() < 4096:
            continue
        embedding = None if roles is None else roles.get(name) == EMBEDDING
        out[name], _ = record_quantize(name, t.reshape(t.shape[0], -1), hessians.get(name), embedding=embedding)
    return out


def golfpack_coder(symbols: dict[str, torch.Tensor], coder: str) -> CoderResult:
    """A golfpack symbol coder stage over every tensor's symbols, checked to round-trip exactly;
    counted: coded stream plus side streams (tables, class ids)."""
    stage = get_stage(coder)()
    decode = decoder_table()[coder].load()
    total, t0 = 0, time.perf_counter()
    for name, q in symbols.items():
        meta = TensorMeta(name, "float32", tuple(q.shape))
        flat = q.reshape(-1).numpy().astype(np.int32)
        enc = stage.encode(flat, EncodeContext(meta))
        if not np.array_equal(decode(enc.value, enc.params, enc.blobs, meta), flat):
            raise RuntimeError(f"{coder} did not round-trip {name}")
        total += len(enc.value) + sum(len(b) for b in enc.blobs.values())
    return CoderResult(coder, total, time.perf_counter() - t0)


def brotli_coder(stream: bytes) -> CoderResult:
    import brotli

    t0 = time.perf_counter()
    packed = brotli.compress(stream, quality=11)
    if brotli.decompress(packed) != stream:
        raise RuntimeError("brotli did not round-trip")
    return CoderResult("brotli-11 (one stream)", len(packed), time.perf_counter() - t0)


def lrzip_coder(stream: bytes) -> CoderResult | None:
    if shutil.which("lrzip") is None:
        return None
    with tempfile.TemporaryDirectory() as d:
        src, packed, back = Path(d, "s"), Path(d, "s.lrz"), Path(d, "back")
        src.write_bytes(stream)
        t0 = time.perf_counter()
        subprocess.run(["lrzip", "-z", "-L", "9", "-q", "-o", str(packed), str(src)], check=True, capture_output=True)
        subprocess.run(["lrzip", "-d", "-q", "-o", str(back), str(packed)], check=True, capture_output=True)
        seconds = time.perf_counter() - t0
        if back.read_bytes() != stream:
            raise RuntimeError("lrzip did not round-trip")
        return CoderResult("lrzip -z -L9 (one stream)", packed.stat().st_size, seconds)


@dataclass(frozen=True)
class CodersBench:
    """One ``bench coders`` run: the records' symbols of a set of weights, coded every way."""

    path: Path
    symbols: int  # how many record symbols
    h0: float  # their order-0 bound, bytes
    results: list[CoderResult]
    gptq: bool  # GPTQ symbols (calibration found), else round-to-nearest


def coders_bench(path: Path, model: str | None = None) -> CodersBench:
    """The records' int6/int7 symbols of the weights at ``path``, coded by each coder."""
    state, hessians, roles = load_bench_weights(path, model)
    symbols = record_symbols(state, hessians, roles)
    if not symbols:
        raise ValueError(f"{path}: no matrix of at least 4,096 elements to code")
    stream = b"".join(q.numpy().astype(np.int8).tobytes() for q in symbols.values())
    h0 = sum(order0_bits(q.numpy().reshape(-1)) for q in symbols.values()) / 8
    results = [golfpack_coder(symbols, "ans"), golfpack_coder(symbols, "ctxans"), brotli_coder(stream)]
    lr = lrzip_coder(stream)
    if lr is not None:
        results.append(lr)
    return CodersBench(path, sum(q.numel() for q in symbols.values()), h0, results, bool(hessians))


def format_coders(bench: CodersBench) -> str:
    path, n, h0, results, gptq = bench.path, bench.symbols, bench.h0, bench.results, bench.gptq
    by = {r.coder.split()[0]: r for r in results}
    lines = [f"{path.name}: {n:,} record symbols ({'GPTQ' if gptq else 'round-to-nearest'}, int6 sdclip:12.85, "
             f"embedding int7 sdclip:14); order-0 bound H0 {h0:,.0f} bytes",
             f"{'coder':<28} {'bytes':>11} {'bits/sym':>8} {'vs H0':>8} {'vs brotli':>9} {'vs lrzip':>9} "
             f"{'seconds':>8} {'lrzip/this':>10}"]
    lrz = by.get("lrzip")
    for r in results:
        vs_lr = f"{r.bytes / lrz.bytes - 1:+.2%}" if lrz else "-"
        speed = f"{lrz.seconds / r.seconds:.1f}x" if lrz and r.seconds else "-"
        lines.append(f"{r.coder:<28} {r.bytes:>11,} {8 * r.bytes / n:>8.4f} {r.bytes / h0 - 1:>+8.2%} "
                     f"{r.bytes / by['brotli-11'].bytes - 1:>+9.2%} {vs_lr:>9} {r.seconds:>8.2f} {speed:>10}")
    if lrz is None:
        lines.append("lrzip: not installed (Debian package lrzip); its column is left out")
    return "\n".join(lines)
