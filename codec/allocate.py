"""Fit a byte budget: per tensor, the bit width and clip that buy the most quality per byte.

The search is a Lagrangian one (the standard tool of rate–distortion allocation): every
quantizable tensor gets a small set of candidates ``(bits, clip, rdoq, lqer)`` (``rdoq``: the
strength of rate-aware rounding, codec/rdoq.py; ``lqer``: the rank of a low-rank error
correction, codec/lqer.py, tried on grids that are Pareto-optimal without one) with an estimated rate
(coded bits) and distortion, and for a multiplier ``lam`` each tensor independently takes the
candidate that minimises ``distortion + lam * rate``. Bisection on ``lam`` finds the best
allocation whose total rate fits the budget. Candidates are estimated with round-to-nearest,
which is cheap (no GPTQ per candidate); the caller encodes the chosen allocation exactly,
corrects each tensor's rates by its measured/estimated ratio, and solves again (``fill`` in
``codec/fill.py``).

Distortion must be in one unit across tensors, since the multiplier compares them: it is the
predicted rise of the training loss, ``sum_ij S_ij (w - w_hat)_ij^2`` with the loss's
sensitivity ``S`` (the diagonal empirical Fisher, ``trainer/calibrate.sensitivities_of``).
Without sensitivities it is the Hessian-diagonal proxy ``sum_ij (w - w_hat)_ij^2 H_jj`` (the
quantity GPTQ minimises within a layer, which says nothing of how much a layer's error costs
downstream), or the plain squared error without a Hessian. Each candidate carries the proxy
too (``Candidate.proxy``), so the proxy's allocation can be built as a contender.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Container, Iterable, Mapping, Sequence

import torch

from .decoders.config import HEAD_PART, LOOKUP_PART
from .decoders.grid import ClipRule, Grid

from .decoders.intq import dequantize, grid_shape, lqer_product, lqer_size
from .encoders.intq import scale_columns, scaled_row_steps
from .entropy import order0_bits
from .lqer import lqer_factors
from .rdoq import quantize_rdoq

BITS = (3, 4, 5, 6, 7, 8)
# Narrow clips for low bit widths, and the records' wide ones (12.85 and up), where the clip
# barely cuts and the bit width sets the step: behind an entropy coder the step decides the bytes.
CLIP_SIGMAS = (2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 8.0, 10.0, 12.85, 16.0, 20.0, 25.0)
# Rate-aware rounding strengths: --fill offers none by default (RDOQ); RDOQ_STRENGTHS made both
# trained models slightly worse once LQER was among the candidates (docs/benchmarks.md).
RDOQ = (0.0,)
RDOQ_STRENGTHS = (0.0, 0.1, 0.25)
LQER_RANKS = (4, 16)
# Column scales (decoders/intq.py): the powers offered, where the inputs' drive is uneven enough
# (COL_SKEW: the Hessian diagonal's arithmetic over geometric mean; a column step's high-rate
# gain grows with it, and is nil for an even diagonal). 0.5: on a small GPT's embedding (two of
# 128 hidden dimensions carry 98 % of the energy) power 1 clipped those columns, 0.5 did not.
COL_POWERS = (0.5,)
COL_SKEW = 2.0
# Row steps by the loss's sensitivity (encoders/intq.py: row_steps): the powers offered where
# sensitivities are given, beside the rule's own steps. Offered together, the allocator took
# both on challenge-long (round-to-nearest estimates: at equal predicted loss, 7.5 % fewer bits
# than the rule's steps at 3.5 bits per weight; 22 % less predicted loss at equal bits on
# sensitivities from other tokens than those that chose the steps); measured with and without
# on the panel in docs/benchmarks.md ("Row steps by sensitivity").
ROW_POWERS = (0.5, 1.0)
# A candidate whose error holds more than this share of its tensor's energy is not offered: a
# second-order prediction of the loss holds for small changes, and such a grid is no longer one
# (3 bits clipped at 25 sigma rounds nearly every weight to zero; on the panel's LoopLM the
# sensitivities, small for one attention's weights, chose exactly that, and it cost).
MAX_RELATIVE_ERROR = 0.25
LQER_BASES = 12  # grids of the front (round-to-nearest ones, spread over its rates) tried with a correction
SCALE_BITS = 16  # one fp16 scale a row
TABLE_BITS_PER_SYMBOL = 12  # ANS table: about a varint and a half per alphabet entry


@dataclass(frozen=True)
class Candidate:
    bits: int
    clip: str
    rate: float  # estimated coded bits, side streams included
    distortion: float  # predicted loss rise (with sensitivities), else the proxy
    rdoq: float = 0.0
    lqer: int = 0
    proxy: float = 0.0  # Hessian-diagonal squared error (see the module's docstring)
    relative: float = 0.0  # squared error over the tensor's squared norm
    trained: bool = False  # the grid QAT trained toward: encoded round-to-nearest, whatever the rule's quantizer
    colscale: float = 0.0  # column scales' power (encoders/intq.column_scales); 0: none
    rowstep: float = 0.0  # row steps' power (encoders/intq.row_steps); 0: the clip rule's

    @property
    def grid(self) -> Grid:
        """Its quantization grid (bits, clip, column scales)."""
        return Grid(self.bits, str(ClipRule.parse(self.clip)), self.colscale)

    @property
    def label(self) -> str:
        return (f"bits={self.bits} clip={self.clip}" + (f" colscale={self.colscale:g}" if self.colscale else "")
                + (f" rowstep={self.rowstep:g}" if self.rowstep else "")
                + (f" rdoq={self.rdoq:g}" if self.rdoq else "")
                + (f" lqer={self.lqer}" if self.lqer else "") + (" trained" if self.trained else ""))


def distortion(w: torch.Tensor, w_hat: torch.Tensor, hdiag: torch.Tensor | None) -> float:
    """The Hessian-diagonal proxy (plain squared error without a Hessian)."""
    err = (w.float() - w_hat.float()).reshape(grid_shape(tuple(w.shape))).double().square()
    if hdiag is not None and hdiag.numel() == err.shape[1]:
        return float((err * hdiag.double()[None, :]).sum())
    return float(err.sum())


def loss_rise(w: torch.Tensor, w_hat: torch.Tensor, sens: torch.Tensor, hessian: torch.Tensor | None = None) -> float:
    """Predicted rise of the mean token loss (nats) from replacing ``w`` by ``w_hat``:
    ``sum_ij S_ij d_ij^2`` with ``d = w - w_hat``, and, given the layer's input second moment
    ``hessian`` (GPTQ's ``H``), each row's term scaled by ``(d_r H d_r^T) / sum_j H_jj d_rj^2``.

    Why the scale: a diagonal sensitivity treats every weight's error as independent. GPTQ makes
    them anything but: it moves each column's error into later columns so that they cancel in
    the layer's output ``d_r x``. ``d_r H d_r^T`` is that output error's energy, and the
    diagonal sum what it would be without cancellation; the ratio is about 1 for
    round-to-nearest and below 1 for GPTQ (a Kronecker-factored Fisher, ``H`` for the input
    factor, keeps this; the diagonal of ``S`` keeps how much each output row matters)."""
    d = (w.double() - w_hat.double()).reshape(grid_shape(tuple(w.shape)))
    per_row = (sens.double().reshape(d.shape) * d.square()).sum(1)
    if hessian is None or hessian.shape != (d.shape[1], d.shape[1]):
        return float(per_row.sum())
    h = hessian.double()
    full = ((d @ h) * d).sum(1).clamp(min=0.0)
    diag = (d.square() * torch.diagonal(h)[None, :]).sum(1)
    factor = torch.where(diag > 0, full / diag.clamp(min=1e-300), torch.ones_like(diag))
    return float((per_row * factor).sum())


PARTS = (LOOKUP_PART, HEAD_PART)  # a tied embedding's sensitivity, split by its two roles, beside the whole


def owner(key: str) -> str:
    """The tensor a sensitivity's key is of: ``tok_emb.weight#lookup`` -> ``tok_emb.weight``."""
    for part in PARTS:
        if key.endswith(part):
            return key[: -len(part)]
    return key


def sensitivities_for(sensitivity: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor],
                      names: Container[str] | None = None) -> dict[str, torch.Tensor]:
    """The entries of ``sensitivity`` (wholes, and a tied embedding's parts) that are of a tensor
    of ``state_dict`` (one of ``names``, when given) and have its shape: what the fill and
    ``bench rd`` read of a sensitivity file, which its reader checks only for being finite 2-D
    tensors (the file may be someone else's, made for another model)."""
    return {k: s for k, s in sensitivity.items()
            if owner(k) in (state_dict if names is None else names) and s.shape == state_dict[owner(k)].shape}


@dataclass(frozen=True)
class LossModel:
    """The predicted loss rise of a tensor's decoded weights (:func:`loss_rise`): its
    sensitivity, each row's term scaled by the cancellation that the Hessian of the layer's
    inputs allows. Not an embedding's as a whole: a token's row is looked up alone, so its
    errors never cancel there, and a tied embedding's Hessian is its output layer's only. A tied
    embedding whose sensitivity comes in its two roles' parts gets each its own: the lookup's as
    is, the head's with the head's cancellation. Why: GPTQ on a tied embedding makes the head's
    errors cancel in the logits, which the whole sensitivity priced as if they did not (on the
    panel's no-fill grid, AdamW without decay, the embedding's predicted rise over its measured
    rise was 10.8 against the matrices' 1.6; split, its prediction falls to a third;
    docs/benchmarks.md)."""

    sens: Mapping[str, torch.Tensor]  # tensor name -> sensitivity; a tied embedding's parts under ``name + part``
    hessians: Mapping[str, torch.Tensor]  # tensor name -> GPTQ's Hessian of its inputs
    embeddings: Container[str] = frozenset()  # looked-up tensors

    def rise(self, n: str, w: torch.Tensor, w_hat: torch.Tensor) -> float:
        """Tensor ``n``'s predicted loss rise (nats per token) from ``w`` replaced by ``w_hat``."""
        lookup, head = (self.sens.get(n + p) for p in PARTS)
        if lookup is not None and head is not None:
            return loss_rise(w, w_hat, lookup) + loss_rise(w, w_hat, head, self.hessians.get(n))
        return loss_rise(w, w_hat, self.sens[n], None if n in self.embeddings else self.hessians.get(n))

    def total(self, state: Mapping[str, torch.Tensor], decoded: Mapping[str, torch.Tensor]) -> float:
        """The predicted loss rise of every tensor with a sensitivity that ``decoded`` holds."""
        return sum(self.rise(n, state[n], decoded[n].float()) for n in self.sens if n in decoded and owner(n) == n)


def estimate(w: torch.Tensor, bits: int, clip: str, hdiag: torch.Tensor | None, rdoq: float = 0.0,
             lqer: int = 0, sens: torch.Tensor | None = None, colscale: float = 0.0, rowstep: float = 0.0) -> Candidate:
    """Rate and distortion of round-to-nearest (rate-aware when ``rdoq``, corrected at rank
    ``lqer``, on columns scaled by ``hdiag`` at power ``colscale``, rows stepped by ``sens`` at
    power ``rowstep``) on the per-row grid (cheap, no GPTQ); ``sens``: the loss sensitivities of ``w``."""
    rule = ClipRule.parse(clip)
    scaled, cols = scale_columns(w, hdiag, colscale)
    steps = scaled_row_steps(scaled, sens, cols, bits, rule, rowstep)
    q, scales = quantize_rdoq(scaled, bits, rule, rdoq, steps)
    w_hat = dequantize(q, scales, tuple(w.shape), torch.float32, cols)
    symbols = q.numpy().reshape(-1)
    alphabet = int(symbols.max()) - int(symbols.min()) + 1 if symbols.size else 1
    rate = (order0_bits(symbols) + SCALE_BITS * (scales.numel() + (cols.numel() if cols is not None else 0))
            + TABLE_BITS_PER_SYMBOL * alphabet)
    if lqer:
        w_hat = w_hat + lqer_product(*lqer_factors(w.float() - w_hat, hdiag, lqer))
        rate += 8 * lqer_size(*w.shape, lqer)
    proxy = distortion(w, w_hat, hdiag)
    w32 = w.float()
    relative = float((w32 - w_hat).square().sum(dtype=torch.float64)) / max(float(w32.square().sum(dtype=torch.float64)),
                                                                           1e-300)
    return Candidate(bits, clip, rate, loss_rise(w, w_hat, sens) if sens is not None else proxy, rdoq, lqer, proxy,
                     relative, colscale=colscale, rowstep=rowstep)


def cand_order(c: Candidate) -> tuple:
    """Candidates' one total order: by rate, then distortion, then their settings (deterministic ties)."""
    return c.rate, c.distortion, c.bits, c.clip, c.colscale, c.rowstep, c.rdoq, c.lqer


def pareto(cands: Iterable[Candidate]) -> list[Candidate]:
    """The candidates no other beats on both rate and distortion, by increasing rate."""
    out: list[Candidate] = []
    for c in sorted(cands, key=cand_order):
        if not out or c.distortion < out[-1].distortion:
            out.append(c)
    return out


def uneven(hdiag: torch.Tensor | None) -> bool:
    """Whether the inputs' drive is uneven enough to offer column scales (``COL_SKEW``)."""
    if hdiag is None or hdiag.numel() < 2 or not bool((hdiag > 0).all()):
        return False
    d = hdiag.double()
    return float(d.mean() / d.log().mean().exp()) >= COL_SKEW


def candidates(w: torch.Tensor, hdiag: torch.Tensor | None, bits: Sequence[int] = BITS,
               clip_sigmas: Sequence[float] = CLIP_SIGMAS, rdoq: Sequence[float] = RDOQ,
               lqer: Sequence[int] = LQER_RANKS, sens: torch.Tensor | None = None,
               colscale: Sequence[float] = COL_POWERS, rowstep: Sequence[float] = ROW_POWERS) -> list[Candidate]:
    """Every candidate on the Pareto front of either measure (the loss-aware one, and the
    proxy: its contender needs its own front), with and without low-rank corrections (the
    fronts without them stay whole: ``fill-no-lqer`` allocates from them), per family: one
    step per row, and column scales at each power of ``colscale`` where the Hessian's diagonal
    is :func:`uneven`, and row steps at each power of ``rowstep`` where sensitivities are given.
    Each family keeps its own fronts and corrections, so the candidates without column scales
    are exactly those offered where they are not (``fill-no-cols`` allocates from them). The
    corrections are tried on up to ``LQER_BASES`` round-to-nearest grids of a family's front,
    spread over its rates (each try costs an SVD)."""
    powers = (0.0, *(p for p in colscale if p)) if w.ndim == 2 and uneven(hdiag) else (0.0,)
    rows = (0.0, *(r for r in rowstep if r)) if sens is not None else (0.0,)
    out: set[Candidate] = set()
    for p in powers:
        for r in rows:
            out |= set(family(w, hdiag, bits, clip_sigmas, rdoq, lqer, sens, p, r))
    return sorted(out, key=cand_order)


def family(w: torch.Tensor, hdiag: torch.Tensor | None, bits: Sequence[int], clip_sigmas: Sequence[float],
           rdoq: Sequence[float], lqer: Sequence[int], sens: torch.Tensor | None, colscale: float,
           rowstep: float = 0.0) -> list[Candidate]:
    """:func:`candidates` of one column-scale and one row-step power."""
    clips = [f"sdclip:{k:g}" for k in clip_sigmas] + ["absmax"]
    grid = [estimate(w, b, c, hdiag, lam, 0, sens, colscale, rowstep) for b in bits for c in clips for lam in rdoq]
    trusted = [c for c in grid if c.relative <= MAX_RELATIVE_ERROR]
    front = both_fronts(trusted or [min(grid, key=lambda c: c.relative)])
    ranks = [r for r in lqer if 0 < r <= min(w.shape)] if w.ndim == 2 else []
    if not ranks:
        return front
    plain = pareto(c for c in front if not c.rdoq)
    bases = [plain[round(i * (len(plain) - 1) / max(LQER_BASES - 1, 1))] for i in range(min(LQER_BASES, len(plain)))]
    corrected = both_fronts(front + [estimate(w, c.bits, c.clip, hdiag, 0.0, r, sens, colscale, rowstep)
                                     for c in dict.fromkeys(bases) for r in ranks])
    return sorted(set(front) | set(corrected), key=cand_order)


def both_fronts(cands: Sequence[Candidate]) -> list[Candidate]:
    """The union of the Pareto fronts by ``distortion`` and by ``proxy``, by increasing rate."""
    by_proxy = pareto(dataclasses.replace(c, distortion=c.proxy, proxy=c.distortion) for c in cands)
    keep = set(pareto(cands)) | {dataclasses.replace(c, distortion=c.proxy, proxy=c.distortion) for c in by_proxy}
    return sorted(keep, key=cand_order)


@dataclass
class Tables:
    """The candidate tables of one fill, per allocatable tensor."""

    full: dict[str, list[Candidate]]  # every candidate estimated
    table: dict[str, list[Candidate]]  # its Pareto front: what the fill allocates over
    plain: dict[str, list[Candidate]]  # the front without low-rank corrections

    def offers(self, feature: str) -> bool:
        """Whether the front offers a candidate with ``feature`` (``lqer``, ``colscale``) set."""
        return any(getattr(c, feature) for cands in self.table.values() for c in cands)

    def without(self, feature: str) -> dict[str, list[Candidate]]:
        """The front of the candidates without ``feature``."""
        return {n: pareto(c for c in cands if not getattr(c, feature)) for n, cands in self.full.items()}


def estimate_tables(state_dict: Mapping[str, torch.Tensor], names: Iterable[str], hdiag: Mapping[str, torch.Tensor],
                    sens: Mapping[str, torch.Tensor], rdoq: Sequence[float], lqer: Sequence[int],
                    say: Callable[[str], None], rowstep: Sequence[float] = ROW_POWERS) -> Tables:
    """Every candidate of each of ``names`` (:func:`candidates`), and the fronts a fill allocates over."""
    full = {}
    for n in names:
        say(f"estimating {n}")
        full[n] = candidates(state_dict[n], hdiag.get(n), rdoq=rdoq, lqer=lqer, sens=sens.get(n), rowstep=rowstep)
    return Tables(full, {n: pareto(c) for n, c in full.items()},
                  {n: pareto(c for c in cands if not c.lqer) for n, cands in full.items()})


def by_proxy(table: Mapping[str, Sequence[Candidate]]) -> dict[str, list[Candidate]]:
    """The same candidates measured by the proxy: the Hessian-diagonal allocation's table."""
    return {n: pareto(dataclasses.replace(c, distortion=c.proxy) for c in cands) for n, cands in table.items()}


def choose(table: Mapping[str, Sequence[Candidate]], lam: float,
           scale: Mapping[str, float] | None = None) -> dict[str, Candidate]:
    """Each tensor's candidate minimising ``distortion + lam * rate * scale[name]``."""
    scale = scale or {}
    return {name: min(cands, key=lambda c: (c.distortion + lam * c.rate * scale.get(name, 1.0), c.rate))
            for name, cands in table.items()}


def total_rate(choice: Mapping[str, Candidate], scale: Mapping[str, float] | None = None) -> float:
    scale = scale or {}
    return sum(c.rate * scale.get(n, 1.0) for n, c in choice.items())


def solve(table: Mapping[str, Sequence[Candidate]], budget_bits: float,
          scale: Mapping[str, float] | None = None) -> dict[str, Candidate]:
    """The least-distortion Lagrangian allocation whose (scaled) rate is at most ``budget_bits``
    (the cheapest allocation if even that does not fit). Rate falls as ``lam`` grows, so a
    geometric bisection brackets the smallest ``lam`` that fits."""
    fits = lambda lam: total_rate(choose(table, lam, scale), scale) <= budget_bits  # noqa: E731
    if fits(0.0):
        return choose(table, 0.0, scale)
    hi = 1.0
    while not fits(hi):
        hi *= 16.0
        if hi > 1e30:
            return {n: min(c, key=lambda c: c.rate) for n, c in table.items()}
    lo = hi
    while fits(lo) and lo > 1e-30:
        lo /= 16.0
    for _ in range(200):  # invariant: fits(hi), not fits(lo)
        mid = (lo * hi) ** 0.5
        if not lo < mid < hi:
            break
        if fits(mid):
            hi = mid
        else:
            lo = mid
    return choose(table, hi, scale)


def ladder_step(table: Mapping[str, Sequence[Candidate]], choice: Mapping[str, Candidate], *, down: bool,
                room: float = float("inf"), scale: Mapping[str, float] | None = None,
                skip: Container[tuple[str, Candidate]] = ()) -> tuple[str, Candidate] | None:
    """The best single-tensor move one rung along its rate ladder (``table``: increasing rate):
    ``down``, the least distortion added per byte saved; up, the most distortion removed per
    byte spent among moves of at most ``room`` bytes. Rates are (``scale``d) estimates; moves
    in ``skip`` are not offered. None when no move is left.

    What the Lagrangian solve cannot do: its allocations sit on the convex hull of the total
    rate, so one can fall short of the budget by the last hull step; the rungs between close the gap."""
    scale = scale or {}
    moves = []
    for n, c in choice.items():
        ladder = table[n]
        j = ladder.index(c) + (-1 if down else 1)
        if not 0 <= j < len(ladder) or (n, ladder[j]) in skip:
            continue
        d_rate = (ladder[j].rate - c.rate) * scale.get(n, 1.0) / 8  # bytes, signed
        d_dist = ladder[j].distortion - c.distortion
        if down:
            moves.append((d_dist / max(-d_rate, 1e-9), n, ladder[j]))
        elif d_rate <= room:
            moves.append((d_dist / max(d_rate, 1e-9), n, ladder[j]))
    if not moves:
        return None
    _, n, c = min(moves, key=lambda m: (m[0], m[1]))
    return n, c


def climb(table: Mapping[str, Sequence[Candidate]], choice: Mapping[str, Candidate],
          budget_bits: float, scale: Mapping[str, float] | None = None) -> dict[str, Candidate]:
    """``choice`` moved up its ladders a rung at a time (:func:`ladder_step`) while the
    (``scale``d) estimated rate stays within ``budget_bits``: the bytes a solve leaves unspent."""
    choice, scale = dict(choice), scale or {}
    room = (budget_bits - total_rate(choice, scale)) / 8
    while (move := ladder_step(table, choice, down=False, room=room, scale=scale)) is not None:
        name, cand = move
        room -= (cand.rate - choice[name].rate) * scale.get(name, 1.0) / 8
        choice[name] = cand
    return choice


def hessian_diagonals(hessians: Mapping[str, torch.Tensor] | None, names: Iterable[str]) -> dict[str, torch.Tensor]:
    return {n: torch.diagonal(hessians[n]).float() for n in names if hessians and n in hessians}
