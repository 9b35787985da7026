"""``golfpack bench rd CKPT``: val_bpb against weight bytes, golfpack against the records'
export, on one checkpoint, one set of Hessians and one set of validation tokens, in one run.

Points measured:

* ``record``: a reference implementation of the #1 record's export (openai/parameter-golf,
  2026-04-27 SP8192 LQER ... 1.0611, ``gptq_mixed_quantize`` + ``_compress``): GPTQ int6 with
  SDClip k on the block matrices, int7 with SDClip k_emb on the embedding, fp16 passthrough
  for the rest, all of it one brotli-11 stream. (The record passes matrices of at most 65,536
  elements through as fp16; at the small widths benchmarked here that would leave the
  attention unquantized, so every matrix with a Hessian is quantized, as the rate-distortion
  issue's table did.) golfpack's ``gptq clip=sdclip:K``
  reproduces the record's quantizer bit for bit (tests/test_records_compat.py), so the symbols
  here are the record's; the bytes are brotli-11 over the raw int8 symbols, fp16 scales and
  fp16 passthrough values (the record also pays torch.save's pickle framing, so this is the
  record's bytes or a little fewer);
* ``golfpack fill``: the default pipeline (``codec/default_pipeline.toml``: it fills the
  budget, codes with ``ctxans`` and stores control tensors as int8) at weight budgets around
  the record's bytes, allocated by predicted loss and closed by scoring its contenders on
  held-out training tokens (``codec/fill.py``); the shipped contender is shown;
* at the record's bytes, each part of the default's allocation switched off in turn: the
  closed loop (the allocation by predicted loss ships unscored), the loss sensitivities (the
  Hessian-diagonal proxy, golfpack's allocator before it was loss-aware), the low-rank
  error correction (no ``lqer``) and the row steps by sensitivity (no ``rowstep``);
* ``golfpack --no-fill``: the default pipeline's written grids (int6/int7, clip sdcap:12.85);
* ``record as run``: the #1 record's whole export (``record_recipe.record_export_full``: its
  per-class clips and its LQER), as one brotli-11 stream and, with ``lrzip`` installed, in its
  per-group lrzip coding, and golfpack's fill at those bytes.

Bytes are weight bytes: the record's brotli stream, golfpack's whole container (headers,
manifest, tables and scales included). val_bpb is the exact challenge metric of the decoded
weights on the same tokens. ``equal bytes`` compares golfpack fill at exactly the record's
bytes; ``bytes for the record's quality`` interpolates golfpack's fill curve. ``predicted``
is the allocator's prediction of each export's loss rise from the same sensitivities, and
Spearman's rank correlation between it and the measured val_bpb is printed over all points.

``mirror`` (``--mirror``) also scores each export's mirror image ``w - d`` (``d = w_hat - w``,
the export's error, reversed). The loss of ``w + d`` is ``L + g.d + q(d)`` to second order and
that of ``w - d`` is ``L - g.d + q(d)``: their mean's rise is the *even* part ``q(d)``, what a
prediction from training statistics can know (the gradient ``g`` of the validation loss is
not among them), and half their difference the *odd* part ``g.d``, where the export's error
happens to point along or against that gradient. Where the odd parts are as large as the
differences between exports, no such prediction can rank the exports by measured val_bpb;
the even part is what it should rank, and its Spearman is printed beside the plain one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ...codec.allocate import LossModel, sensitivities_for
from ...codec.decoders.config import EMBEDDING
from ...codec.fill import fill
from ...codec.registry import decoder_table
from ...codec.host import decode_state_dict
from ...codec.pipeline import complete_hessians, encode_state_dict
from ...codec.spec import load_spec
from ..encode import file_calibration, read_stat_files
from ..models import open_checkpoint
from ...model.anatomy import load_weights
from ...trainer.roles import tensor_roles
from ...model.builders import build_model
from ...model.scoring import EvalSettings, evaluate, truncate_for_eval
from ...model.shards import check_shards, load_tokens, refuse_validation, resolve_shards
from ...model.tokenizer import byte_tables_for
from ...trainer.calibration_files import calib_path
from .record_recipe import record_export, record_export_full
from ... import contender_score

SENS_TOKENS = 32_768


@dataclass
class Point:
    label: str
    bytes: int
    val_bpb: float
    predicted: float = math.nan  # the allocator's predicted loss rise (nats per token)
    shipped: str = ""  # the closed loop's winning contender, for fill points that ran it
    kind: str = ""  # "record", "record-full", "fill" (the curve), "fill-full" (at the full record's bytes), ""
    at_record: bool = False  # a fill at exactly the record's bytes (1.00x), with or without parts switched off
    mirrored: float = math.nan  # val_bpb of the mirror image w - d (``mirror``; module docstring)

    def parts(self, base: float) -> tuple[float, float]:
        """The rise's even and odd parts (module docstring), from the mirror image's val_bpb."""
        return (self.val_bpb + self.mirrored) / 2 - base, (self.val_bpb - self.mirrored) / 2


@dataclass
class RD:
    base: float  # the float model's val_bpb
    points: list[Point]
    params: int
    spearman: float = math.nan  # predicted loss rise against measured val_bpb, over the points
    spearman_even: float = math.nan  # predicted loss rise against the rise's even part (``mirror``)


def interpolate_bytes(points: list[Point], target_bpb: float) -> float | None:
    """Bytes at which a curve of (bytes, val_bpb) points reaches ``target_bpb`` (linear between
    neighbours); None if it never does."""
    pts = sorted(points, key=lambda p: p.bytes)
    for a, b in zip(pts, pts[1:]):
        if (a.val_bpb - target_bpb) * (b.val_bpb - target_bpb) <= 0 and a.val_bpb != b.val_bpb:
            return a.bytes + (target_bpb - a.val_bpb) * (b.bytes - a.bytes) / (b.val_bpb - a.val_bpb)
    return None


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    def ranks(x: list[float]) -> np.ndarray:
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x), dtype=float)
        for v in set(x):  # ties share their mean rank
            idx = [i for i, y in enumerate(x) if y == v]
            r[idx] = r[idx].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if len(a) < 3 or ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def mirror_image(state: dict[str, torch.Tensor], decoded: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``w - d`` for every floating tensor of the export (``d = w_hat - w``); the rest as decoded."""
    return {n: 2 * state[n].float() - t.float() if t.is_floating_point() and n in state else t
            for n, t in decoded.items()}


def rd_bench(checkpoint: str, train: str, val: str, tokenizer: str, val_tokens: int, seq_len: int | None = None,
             fill_fractions: tuple[float, ...] = (0.8, 0.9, 1.0, 1.1), k: float = 12.85, k_emb: float = 14.0,
             echo: Callable[[str], None] = print, score_tokens: int = 32_768, model: str | None = None,
             device: str = "cpu", mirror: bool = False) -> RD:
    """Every point, scored on the same tokens (``seq_len``: the run's train_seq_len by default).
    The statistics come by build's own path (``packer/encode.py``): the checkpoint's calibration
    file, completed as ``build`` completes it (``complete_hessians``: the identity for a matrix no
    hook saw, such as an untied embedding) for golfpack's exports and the records' alike; the
    sensitivities beside it or measured on the training shards ``train``; the closed loop's
    ``score_tokens`` from those shards (ones the run never reached where they hold them).
    ``device``: where validation is scored, in fp32 (the rest runs on the CPU); ``mirror``: also
    score each export's mirror image (the module's docstring), twice the scoring time."""
    check_shards(refuse_validation(resolve_shards(train), val))
    files = read_stat_files(Path(checkpoint), None, sensitivity=True, log=echo)
    if files.hessians is None:
        raise ValueError(f"{calib_path(checkpoint)}: bench rd needs the checkpoint's calibration Hessians "
                         "(train with calib_tokens)")
    ckpt = open_checkpoint(checkpoint, model)
    seq_len = seq_len or ckpt.train_seq_len
    state = {k_: v.float() for k_, v in ckpt.state_dict.items()}
    calib_tokens = int((ckpt.train_config or {}).get("calib_tokens") or 65_536)
    model = ckpt.build_model()
    roles = tensor_roles(model)
    default = load_spec("default").with_roles(roles)
    hessians = complete_hessians(state, default, files.hessians, echo)
    calibration = file_calibration(files, model, hessians, train, calib_tokens=calib_tokens, sens_tokens=SENS_TOKENS,
                                   score_tokens=score_tokens, seq_len=ckpt.train_seq_len, seen=ckpt.tokens_seen,
                                   log=echo)
    sens = sensitivities_for(calibration.sensitivity, state)
    loss = LossModel(sens, hessians, frozenset(n for n, r in roles.items() if r == EMBEDDING))
    closed = contender_score(model, calibration.score, decoder_table())  # loads each contender into it
    tables = byte_tables_for(tokenizer, ckpt.vocab_size)
    tokens = load_tokens(val, ckpt.vocab_size)
    tokens = truncate_for_eval(tokens[: val_tokens + 1] if val_tokens else tokens, seq_len)

    def score(sd: dict[str, torch.Tensor]) -> float:
        model = load_weights(build_model(ckpt.model_builder, ckpt.model_config), sd, str(checkpoint))
        return evaluate(model.to(device), tokens, tables, EvalSettings(seq_len, batch_seqs=64), device=device, bf16=False).val_bpb

    base = score(state)
    echo(f"float val_bpb {base:.6f} on {tokens.numel() - 1:,} tokens")
    points: list[Point] = []

    def add(label: str, nbytes: int, decoded: dict[str, torch.Tensor], shipped: str = "", kind: str = "",
            at_record: bool = False, same: Point | None = None) -> None:
        """One export's point; ``same``: a point of the same weights, whose scores it shares."""
        val_bpb = score(decoded) if same is None else same.val_bpb
        mirrored = (score(mirror_image(state, decoded)) if same is None else same.mirrored) if mirror else math.nan
        points.append(Point(label, nbytes, val_bpb, loss.total(state, decoded), shipped, kind,
                            at_record, mirrored))
        echo(f"{label}: {nbytes:,} bytes, val_bpb {val_bpb:.6f}" + (f" (mirror image {mirrored:.6f})" if mirror else "")
             + f" (predicted rise {points[-1].predicted:.6f} nats)")

    rec_bytes, rec_state = record_export(state, hessians, k, k_emb, roles)
    add(f"record int6 sdclip:{k:g} + int7 emb sdclip:{k_emb:g} + brotli-11", rec_bytes, rec_state, kind="record")

    def add_fill(f: float, switches: dict, label: str, kind: str = "", base_bytes: int = rec_bytes) -> None:
        alloc = fill(state, default, hessians, int(base_bytes * f), {}, **switches)
        if alloc.contenders:
            echo("  " + ", ".join(f"{c['name']} {c['loss']:.6f}" for c in alloc.contenders) + f" -> {alloc.name}")
        add(label, len(alloc.container), decode_state_dict(alloc.container)[0], alloc.name if alloc.contenders else "",
            kind, at_record=f == 1.0 and base_bytes == rec_bytes)

    closed_loop = {"sensitivity": sens, "score": closed}
    for f in fill_fractions:
        add_fill(f, closed_loop, f"golfpack fill {f:.2f}x record bytes", "fill")
    add_fill(1.0, {"sensitivity": sens}, "golfpack fill 1.00x, predicted loss only (no closed loop)")
    add_fill(1.0, {}, "golfpack fill 1.00x, Hessian proxy only (before loss-aware)")
    add_fill(1.0, {**closed_loop, "lqer": ()}, "golfpack fill 1.00x, no lqer")
    add_fill(1.0, {**closed_loop, "rowstep": ()}, "golfpack fill 1.00x, no row steps")
    fixed = encode_state_dict(state, default, hessians, {})
    add("golfpack --no-fill (int6/int7 sdcap:12.85)", len(fixed), decode_state_dict(fixed)[0])
    full = record_export_full(state, hessians, roles)
    add("record as run: class clips + LQER + brotli-11", full.brotli_bytes, full.state, kind="record-full")
    if full.pergroup_bytes is not None:
        add("record as run: class clips + LQER + per-group lrzip", full.pergroup_bytes, full.state, kind="record-full",
            same=points[-1])
    add_fill(1.0, closed_loop, "golfpack fill at the record-as-run's bytes", "fill-full", points[-1].bytes)
    rho = spearman([p.predicted for p in points], [p.val_bpb for p in points])
    even = spearman([p.predicted for p in points], [p.parts(base)[0] for p in points]) if mirror else math.nan
    return RD(base, points, sum(t.numel() for t in state.values()), rho, even)


def format_rd(rd: RD) -> str:
    base, points, params = rd.base, rd.points, rd.params
    rec = points[0]
    mirrored = any(not math.isnan(p.mirrored) for p in points)
    lines = [f"{'export':<60} {'bytes':>11} {'bits/p':>7} {'val_bpb':>10} {'Δ float':>9} {'Δ/Δrecord':>9} "
             f"{'predicted':>10} " + (f"{'Δ even':>9} {'Δ odd':>9} " if mirrored else "") + "shipped"]
    for p in points:
        ratio = (p.val_bpb - base) / (rec.val_bpb - base) if rec.val_bpb != base else math.nan
        parts = "".join(f"{x:>+9.6f} " for x in p.parts(base)) if mirrored else ""
        lines.append(f"{p.label:<60} {p.bytes:>11,} {8 * p.bytes / params:>7.3f} {p.val_bpb:>10.6f} "
                     f"{p.val_bpb - base:>+9.6f} {ratio:>9.3f} {p.predicted:>10.6f} {parts}{p.shipped or '-'}")
    fills = [p for p in points if p.kind == "fill"]
    for equal in (p for p in points if p.at_record):
        lines.append(f"at the record's bytes ({rec.bytes:,}; {equal.label}: {equal.bytes:,}): val_bpb increase "
                     f"{(equal.val_bpb - base) / (rec.val_bpb - base):.3f}x the record's")
    full = [p for p in points if p.kind == "record-full"]
    for equal in (p for p in points if p.kind == "fill-full"):
        lines.append(f"at the record-as-run's bytes ({full[-1].bytes:,}, {full[-1].label}; fill: {equal.bytes:,}): "
                     f"val_bpb increase {(equal.val_bpb - base) / (full[-1].val_bpb - base):.3f}x its")
    lines.append(f"bytes for the record's quality: {quality_bytes(fills, rec)}")
    lines.append(f"predicted loss rise against measured val_bpb: Spearman {rd.spearman:.3f} over {len(points)} exports")
    if mirrored:
        odd = sorted(abs(p.parts(base)[1]) for p in points)
        lines.append("predicted loss rise against the rise's even part (w+d and w-d): "
                     f"Spearman {rd.spearman_even:.3f}; odd part (the validation gradient along d) "
                     f"{odd[len(odd) // 2]:.6f} median, {odd[-1]:.6f} largest, in val_bpb")
    return "\n".join(lines)


def quality_bytes(fills: list[Point], rec: Point) -> str:
    """Where golfpack's fill curve reaches the record's val_bpb, in words."""
    need = interpolate_bytes(fills, rec.val_bpb)
    if need is not None:
        saved = 1 - need / rec.bytes
        return f"{need:,.0f} ({100 * abs(saved):.1f}% {'fewer' if saved >= 0 else 'more'})"
    smallest = min(fills, key=lambda p: p.bytes, default=None)
    if smallest is not None and smallest.val_bpb <= rec.val_bpb:
        return (f"at most {smallest.bytes:,} (at least {100 * (1 - smallest.bytes / rec.bytes):.1f}% fewer: the "
                "smallest fill measured is already better)")
    return "not reached in the measured fill range"


def plot_rd(base: float, points: list[Point], out: str, title: str, force: bool = False) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...model.files import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(7, 4.5))
    curve = [p for p in points if p.kind == "fill"]
    fills = sorted(curve, key=lambda p: p.bytes)
    ax.plot([p.bytes for p in fills], [p.val_bpb - base for p in fills], "o-", label="golfpack --fill (default pipeline)")
    for p, marker in zip([x for x in points if x not in curve], "s^Dv*PXho"):
        ax.plot([p.bytes], [p.val_bpb - base], marker, markersize=9, label=p.label)
    ax.set_xlabel("weight bytes")
    ax.set_ylabel("val_bpb increase over float")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=120, format="png")
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue(), overwrite=force)
