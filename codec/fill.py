"""``--fill``: encode a state dict into a container of at most ``budget`` bytes, as close under
it as ``tolerance`` allows, spending the bytes where they buy the most quality.

Every matrix whose pipeline rule starts with a per-row grid quantizer (``rtn``, ``gptq`` or a
plugin on their parameters) and does not say ``allocate = false`` is allocatable: the
allocator (``allocate.py``) picks its bits, clip and low-rank correction (and rate-aware
rounding strength, when offered); the rest of its chain (the coder) stays as the rule says.
Other tensors are encoded as their rules say. The loop:

1. estimate every allocatable tensor's candidates with round-to-nearest (once);
2. solve the Lagrangian allocation for the bytes left after the fixed tensors and overhead;
3. encode the chosen candidates exactly (GPTQ where the rule says gptq; cached per choice),
   write the container, and measure it;
4. correct each tensor's estimated rates by measured/estimated for its chosen candidate, and
   repeat from 2 until the container lands in ``[budget * (1 - tolerance), budget]``;
5. if the discrete choices straddle that window, step single tensors up (or down) the rate
   ladder, best distortion per byte first, until it lands or no step fits.

Deterministic: the same inputs give the same container.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch

from .allocate import LQER_RANKS, RDOQ, Candidate, candidates, hessian_diagonals, solve
from .decoders.container import write_container
from .encoders.intq import QuantParams
from .pipeline import Record, encode_tensor, record_bytes
from .spec import PipelineSpec
from .stage import Stage, StageError

MAX_SOLVES = 8
MAX_STEPS = 64


# The allocation as the container's meta stores it, per tensor: the one schema of that record
# (``packer/ledger.py`` reads it back as untrusted input).
ALLOCATION_FIELDS = {"bits": int, "clip": str, "rdoq": float, "lqer": int, "estimated_bytes": int,
                     "distortion": float}


@dataclass
class Allocation:
    """What ``fill`` chose per allocatable tensor, the container, and how it got there."""

    container: bytes
    choice: dict[str, Candidate]
    steps: int = 0
    log: list[str] = field(default_factory=list)


def allocation_meta(choice: Mapping[str, Candidate]) -> dict:
    """The allocation as the container's meta stores it (``ALLOCATION_FIELDS``; inspect shows it)."""
    return {n: {"bits": c.bits, "clip": c.clip, "rdoq": float(c.rdoq), "lqer": c.lqer,
                "estimated_bytes": round(c.rate / 8), "distortion": float(f"{c.distortion:.6g}")}
            for n, c in sorted(choice.items())}


def allocatable(spec: PipelineSpec, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    return [n for n, t in state_dict.items() if t.ndim == 2 and t.numel() > 0 and spec.rule_for(n).allocate
            and isinstance(spec.rule_for(n).stages[0].params, QuantParams)]


def with_grid(stages: tuple[Stage, ...], cand: Candidate) -> tuple[Stage, ...]:
    """The rule's chain with its quantizer's bits, clip, rdoq and lqer replaced by the candidate's."""
    first = stages[0]
    params = {**dataclasses.asdict(first.params), "bits": cand.bits, "clip": cand.clip, "rdoq": cand.rdoq,
              "lqer": cand.lqer}
    return (type(first)(**params), *stages[1:])


def fill(state_dict: Mapping[str, torch.Tensor], spec: PipelineSpec, hessians: Mapping[str, torch.Tensor] | None,
         budget: int, meta: dict, tolerance: float = 0.001,
         progress: Callable[[str], None] | None = None, rdoq: Sequence[float] = RDOQ,
         lqer: Sequence[int] = LQER_RANKS) -> Allocation:
    names = allocatable(spec, state_dict)
    if not names:
        raise StageError("--fill: no tensor's rule starts with a grid quantizer (rtn, gptq); nothing to allocate")
    say = progress or (lambda _: None)
    hessians = hessians or {}
    hdiag = hessian_diagonals(hessians, names)
    table = {}
    for n in names:
        say(f"estimating {n}")
        table[n] = candidates(state_dict[n], hdiag.get(n), rdoq=rdoq, lqer=lqer)
    fixed = {n: encode_tensor(n, t, spec.rule_for(n).stages, hessians.get(n))
             for n, t in state_dict.items() if n not in table}
    cache: dict[tuple[str, int, str, float, int], Record] = {}

    def encoded(n: str, c: Candidate) -> Record:
        key = (n, c.bits, c.clip, c.rdoq, c.lqer)
        if key not in cache:
            say(f"encoding {n} {c.label}")
            cache[key] = encode_tensor(n, state_dict[n], with_grid(spec.rule_for(n).stages, c), hessians.get(n))
        return cache[key]

    def build(choice: dict[str, Candidate]) -> bytes:
        records = [fixed[n] if n in fixed else encoded(n, choice[n]) for n in state_dict]
        return write_container(records, {**meta, "allocation": allocation_meta(choice)})

    lo_ok = budget * (1 - tolerance)
    scale = {n: 1.0 for n in names}
    overhead = sum(record_bytes(r) for r in fixed.values())
    result: Allocation | None = None
    for solves in range(1, MAX_SOLVES + 1):
        choice = solve(table, 8.0 * (budget - overhead), scale)
        data = build(choice)
        measured = {n: record_bytes(encoded(n, c)) for n, c in choice.items()}
        result = Allocation(data, choice)
        result.log.append(f"solve {solves}: {len(data):,} bytes (budget {budget:,})")
        if lo_ok <= len(data) <= budget:
            return result
        overhead = len(data) - sum(measured.values())
        scale = {n: measured[n] * 8 / c.rate if c.rate > 0 else 1.0 for n, c in choice.items()}
    return _step(result, table, scale, budget, lo_ok, build, encoded)


def _step(result: Allocation, table: Mapping[str, list[Candidate]], scale: Mapping[str, float], budget: int,
          lo_ok: float, build: Callable[[dict[str, Candidate]], bytes],
          encoded: Callable[[str, Candidate], Record]) -> Allocation:
    """Single-tensor moves along each tensor's rate ladder until the container lands in the
    window: down (least distortion added per byte saved) while over budget, up (most distortion
    removed per byte spent) while under the window and a step fits. A step whose exact encode
    turns out not to fit is not tried again."""
    choice, data = dict(result.choice), result.container
    too_big: set[tuple[str, Candidate]] = set()
    for steps in range(1, MAX_STEPS + 1):
        size = len(data)
        if lo_ok <= size <= budget:
            break
        over = size > budget
        moves = []
        for n, c in choice.items():
            ladder = table[n]
            i = ladder.index(c)
            j = i - 1 if over else i + 1
            if not 0 <= j < len(ladder) or (n, ladder[j]) in too_big:
                continue
            d_rate = (ladder[j].rate - c.rate) * scale.get(n, 1.0) / 8  # bytes, signed
            d_dist = ladder[j].distortion - c.distortion
            if over:
                moves.append((d_dist / max(-d_rate, 1e-9), n, ladder[j]))
            elif d_rate <= budget - size:
                moves.append((d_dist / max(d_rate, 1e-9), n, ladder[j]))
        if not moves:
            break
        _, n, c = min(moves, key=lambda m: (m[0], m[1]))
        trial = {**choice, n: c}
        trial_data = build(trial)
        if not over and len(trial_data) > budget:  # the estimate was off: this step does not fit
            too_big.add((n, c))
            continue
        choice, data = trial, trial_data
        result.steps = steps
    result.container, result.choice = data, choice
    result.log.append(f"steps {result.steps}: {len(data):,} bytes (budget {budget:,})")
    return result
