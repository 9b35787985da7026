"""``--fill``: encode a state dict into a container of at most ``budget`` bytes, as close under
it as ``tolerance`` allows, spending the bytes where they buy the most quality.

Every matrix whose pipeline rule starts with a per-row grid quantizer (``rtn``, ``gptq`` or a
plugin on their parameters) and does not say ``allocate = false`` is allocatable: the
allocator (``allocate.py``) picks its bits, clip and low-rank correction (and rate-aware
rounding strength, when offered); the rest of its chain (the coder) stays as the rule says.
Other tensors are encoded as their rules say. The loop:

1. estimate every allocatable tensor's candidates with round-to-nearest (once);
2. solve the Lagrangian allocation for the bytes left after the fixed tensors and overhead,
   and spend what its convex hull leaves a rung at a time (``allocate.climb``);
3. encode the chosen candidates exactly (by the rule's quantizer, GPTQ where it says gptq, or
   by round-to-nearest where that leaves the lower predicted loss; cached per choice), write
   the container, and measure it;
4. correct each tensor's estimated rates by measured/estimated for its chosen candidate, and
   repeat from 2 until the container lands in ``[budget * (1 - tolerance), budget]``;
5. if the discrete choices straddle that window, step single tensors up (or down) the rate
   ladder, best distortion per byte first, until it lands or no step fits.

**Closed loop.** Given ``score`` (the real cross-entropy of a container's weights on held-out
training tokens, supplied by the caller, who has the model), the final contenders
(``contenders.py``: golfpack's allocations, the trained grids and the records' recipes as
guards) are all built within the budget, scored and predicted again from their exact weights,
and :func:`contenders.pick` chooses the one that ships; the contenders, their scores and
predictions go into the container's meta (``inspect``).

Deterministic: the same inputs give the same container.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import replace
from typing import Callable, Mapping, Sequence

import torch

from .allocate import (LQER_RANKS, RDOQ, ROW_POWERS, Candidate, Tables, by_proxy, LossModel, climb,
                       estimate_tables, hessian_diagonals, ladder_step, solve)
from .allocatable import split_tensors, used_decoders
from .contenders import (ALLOCATION_KEY, CHOSEN_KEY, CONTENDERS_KEY, PREDICTED, Allocation, Contender, allocation_meta,
                         best_predicted, contenders_meta, contenders_reserve, pick, records_grid, trained_grids)
from .decoders.chain import DecoderSpec, decode_container
from .decoders.config import EMBEDDING
from .decoders.container import read_container, write_container
from .decoders.grid import Grid
from .encoders.intq import RTN, QuantParams
from .pipeline import Record, encode_tensor, record_bytes
from .rules import PipelineSpec
from .stage import Stage, StageError

MAX_SOLVES = 8
MAX_STEPS = 64

Score = Callable[[bytes], Sequence[float]]  # container -> its weights' mean cross-entropy per held-out window


def with_grid(stages: tuple[Stage, ...], cand: Candidate) -> tuple[Stage, ...]:
    """The rule's chain with its quantizer's bits, clip, column scales, row steps, rdoq and lqer
    replaced by the candidate's (and by round-to-nearest for a trained grid)."""
    first = stages[0]
    if cand.trained:
        return (RTN(bits=cand.bits, clip=cand.clip, colscale=cand.colscale), *stages[1:])
    params = {**dataclasses.asdict(first.params), "bits": cand.bits, "clip": cand.clip, "rdoq": cand.rdoq,
              "lqer": cand.lqer, "colscale": cand.colscale, "rowstep": cand.rowstep}
    return (type(first)(**params), *stages[1:])


def rounded(stage: Stage) -> RTN:
    """Round-to-nearest on ``stage``'s grid (its bits, clip, column scales, row steps, rdoq and lqer)."""
    return RTN(**{f.name: getattr(stage.params, f.name) for f in dataclasses.fields(QuantParams)})


class Filler:
    """One state dict's encodes, cached per (tensor, candidate), and the containers built from
    them: every contender is a choice of one candidate per allocatable tensor."""

    def __init__(self, state_dict: Mapping[str, torch.Tensor], spec: PipelineSpec,
                 hessians: Mapping[str, torch.Tensor], meta: dict, say: Callable[[str], None],
                 sensitivity: Mapping[str, torch.Tensor], decoders: Mapping[str, DecoderSpec] | None = None) -> None:
        self.state_dict, self.spec, self.hessians, self.meta, self.say = state_dict, spec, hessians, meta, say
        self.decoders = used_decoders(spec, state_dict) if decoders is None else decoders
        self.names, self.fixed, self.sens = split_tensors(spec, state_dict, hessians, sensitivity)
        self.loss = LossModel(self.sens, hessians, frozenset(n for n in self.names if self.is_embedding(n)))
        self.cache: dict[tuple[str, Candidate], Record] = {}
        self.rises: dict[tuple[str, Candidate], float] = {}

    def is_embedding(self, n: str) -> bool:
        """By its role (``spec.with_roles``): a spec without roles has no embedding."""
        return self.spec.roles.get(n) == EMBEDDING

    @staticmethod
    def key(n: str, c: Candidate) -> tuple[str, Candidate]:
        return n, dataclasses.replace(c, rate=0.0, distortion=0.0, proxy=0.0, relative=0.0)

    def encoded(self, n: str, c: Candidate) -> Record:
        """Tensor ``n`` encoded on ``c``'s grid by the rule's quantizer or, where the loss
        sensitivities can judge and round-to-nearest leaves the lower predicted rise, by
        round-to-nearest (:func:`rounded`). Why: GPTQ lowers the error of a layer's output on
        its calibration inputs by moving each column's error into later ones, and a tensor
        whose error is not only seen through those inputs pays for the moved error: a tied
        embedding, whose Hessian is its output layer's, is also looked up row by row (on three
        of golfpack's small GPTs at 2.5 bits per parameter, round-to-nearest there scored 0.025
        to 0.045 bpb better, docs/benchmarks.md)."""
        key = self.key(n, c)
        if key not in self.cache:
            self.say(f"encoding {n} {c.label}")
            stages = with_grid(self.spec.rule_for(n).stages, c)
            stats = self.hessians.get(n), self.sens.get(n)
            record = encode_tensor(n, self.state_dict[n], stages, *stats)
            if n in self.sens and not isinstance(stages[0], RTN):
                other = encode_tensor(n, self.state_dict[n], (rounded(stages[0]), *stages[1:]), *stats)
                rise, other_rise = self.exact_rise(n, record), self.exact_rise(n, other)
                # ties: the rule's quantizer
                record, self.rises[key] = (other, other_rise) if other_rise < rise else (record, rise)
            self.cache[key] = record
        return self.cache[key]

    def exact_rise(self, n: str, record: Record) -> float:
        """The predicted loss rise of tensor ``n``'s weights as ``record`` decodes them."""
        decoded = decode_container(read_container(write_container([record], {})), self.decoders)
        return self.loss.rise(n, self.state_dict[n], decoded[n].float())

    def rise(self, n: str, c: Candidate) -> float:
        """The predicted loss rise of tensor ``n``'s exact (decoded) weights under ``c``: what
        GPTQ and the coder really left, not the round-to-nearest estimate of the candidate."""
        key = self.key(n, c)
        if key not in self.rises:
            self.rises[key] = self.exact_rise(n, self.encoded(n, c))
        return self.rises[key]

    def predicted(self, choice: Mapping[str, Candidate]) -> float:
        """The predicted loss rise of an allocation's exact weights (allocatable tensors)."""
        return sum(self.rise(n, c) for n, c in choice.items() if n in self.sens)

    def build(self, choice: Mapping[str, Candidate], extra: dict | None = None) -> bytes:
        records = [self.fixed[n] if n in self.fixed else self.encoded(n, choice[n]) for n in self.state_dict]
        return write_container(records, {**self.meta, ALLOCATION_KEY: allocation_meta(choice), **(extra or {})})

    def measured(self, choice: Mapping[str, Candidate]) -> dict[str, int]:
        return {n: record_bytes(self.encoded(n, c)) for n, c in choice.items()}

    def allocate(self, table: Mapping[str, list[Candidate]], budget: int, tolerance: float) -> Allocation:
        """The Lagrangian allocation of ``table`` that lands in ``[budget * (1 - tolerance), budget]``.

        (Distortions stay the round-to-nearest estimates: correcting a tensor's whole ladder by
        its chosen candidate's exact/estimated ratio was tried and moved the panel's Muon model's
        embedding to 3 bits, where the ratio no longer held; exact predictions choose among the
        finished contenders instead.)"""
        lo_ok = budget * (1 - tolerance)
        scale = {n: 1.0 for n in table}
        overhead = sum(record_bytes(r) for r in self.fixed.values())
        result: Allocation | None = None
        for solves in range(1, MAX_SOLVES + 1):
            bits = 8.0 * (budget - overhead)
            choice = climb(table, solve(table, bits, scale), bits, scale)
            data = self.build(choice)
            measured = self.measured(choice)
            result = Allocation(data, choice)
            result.log.append(f"solve {solves}: {len(data):,} bytes (budget {budget:,})")
            if lo_ok <= len(data) <= budget:
                return result
            overhead = len(data) - sum(measured.values())
            scale = {n: measured[n] * 8 / c.rate if c.rate > 0 else 1.0 for n, c in choice.items()}
        return self.step(result, table, scale, budget, lo_ok)

    def step(self, result: Allocation, table: Mapping[str, list[Candidate]], scale: Mapping[str, float],
              budget: int, lo_ok: float) -> Allocation:
        """Single-tensor moves along each tensor's rate ladder until the container lands in the
        window: down (least distortion added per byte saved) while over budget, up (most
        distortion removed per byte spent) while under the window and a step fits. A step whose
        exact encode turns out not to fit is not tried again."""
        choice, data = dict(result.choice), result.container
        too_big: set[tuple[str, Candidate]] = set()
        for steps in range(1, MAX_STEPS + 1):
            size = len(data)
            if lo_ok <= size <= budget:
                break
            over = size > budget
            move = ladder_step(table, choice, down=over, room=budget - size, scale=scale, skip=too_big)
            if move is None:
                break
            n, c = move
            trial = {**choice, n: c}
            trial_data = self.build(trial)
            if not over and len(trial_data) > budget:  # the estimate was off: this step does not fit
                too_big.add((n, c))
                continue
            choice, data = trial, trial_data
            result.steps = steps
        result.container, result.choice = data, choice
        result.log.append(f"steps {result.steps}: {len(data):,} bytes (budget {budget:,})")
        return result


def variants(tables: Tables) -> dict[Contender, dict[str, list[Candidate]]]:
    """The other tables the prediction judges, where they differ from the full front."""
    return {**({Contender.FILL_NO_LQER: tables.plain} if tables.offers("lqer") else {}),
            **({Contender.FILL_NO_COLS: tables.without("colscale")} if tables.offers("colscale") else {})}


class Laps:
    """Seconds since the previous call (the first: since made), for the fill's ``time:`` line."""

    def __init__(self) -> None:
        self.last = time.perf_counter()

    def __call__(self) -> float:
        now = time.perf_counter()
        elapsed, self.last = now - self.last, now
        return elapsed


def fill(state_dict: Mapping[str, torch.Tensor], spec: PipelineSpec, hessians: Mapping[str, torch.Tensor] | None,
         budget: int, meta: dict, tolerance: float = 0.001,
         progress: Callable[[str], None] | None = None, rdoq: Sequence[float] = RDOQ,
         lqer: Sequence[int] = LQER_RANKS, sensitivity: Mapping[str, torch.Tensor] | None = None,
         score: Score | None = None, decoders: Mapping[str, DecoderSpec] | None = None,
         trained: Mapping[str, Grid] | None = None, rowstep: Sequence[float] = ROW_POWERS) -> Allocation:
    """The container that fills ``budget``: the allocation by predicted loss, or, with
    ``score``, the contender :func:`contenders.pick` ships (:func:`closed_loop`). ``decoders``:
    the table that decodes contenders for their exact predictions (default:
    :func:`used_decoders`); ``trained``: the grids the weights were trained toward, per tensor;
    ``rdoq``, ``lqer``, ``rowstep``: the rate-aware rounding strengths, correction ranks and row
    step powers offered (``allocate.py``)."""
    say = progress or (lambda _: None)
    hessians = hessians or {}
    lap = Laps()
    filler = Filler(state_dict, spec, hessians, meta, say, sensitivity or {}, decoders)
    if not filler.names:
        raise StageError("--fill: no tensor's rule starts with a grid quantizer (rtn, gptq); nothing to allocate")
    hdiag = hessian_diagonals(hessians, filler.names)
    tables = estimate_tables(state_dict, filler.names, hdiag, filler.sens, rdoq, lqer, say, rowstep)
    estimated = lap()
    if score is not None:
        return closed_loop(filler, tables, hdiag, budget, tolerance, trained, score, say, lap, estimated)
    # nothing measures: the weights trained toward a plan ship its grids
    alloc = trained_grids(filler, trained, hdiag, tables.plain, budget, tolerance) if trained else None
    if alloc is None:
        runs = [filler.allocate(tables.table, budget, tolerance)]
        if filler.sens:  # no scores, but the exact weights' predicted rise can still choose
            runs += [replace(filler.allocate(t, budget, tolerance), name=name) for name, t in variants(tables).items()]
        for run in runs:
            run.predicted = filler.predicted(run.choice) if filler.sens else None
        alloc = best_predicted(runs) if filler.sens else runs[0]
    alloc.log.append(f"time: fixed tensors and estimates {estimated:.1f}s, allocation {lap():.1f}s")
    return alloc


def closed_loop(filler: Filler, tables: Tables, hdiag: Mapping[str, torch.Tensor], budget: int, tolerance: float,
                trained: Mapping[str, Grid] | None, score: Score, say: Callable[[str], None],
                lap: Laps, estimated: float) -> Allocation:
    """Every contender (``contenders.py``) built within ``budget`` less the reserve for their
    record, predicted, scored (golfpack's own allocations: only the best predicted), and the
    one :func:`contenders.pick` chooses, with the record in its meta."""
    inner = budget - contenders_reserve(filler.meta)
    # the record written is up to a few dozen bytes smaller than its reserve: a quarter of the
    # window keeps the container with it in the whole window, down to budgets of some 70 KB
    tolerance = tolerance / 4
    main = filler.allocate(tables.table, inner, tolerance)
    allocated = lap()
    runs = [main, *(replace(filler.allocate(t, inner, tolerance), name=name) for name, t in variants(tables).items())]
    if trained and (qat := trained_grids(filler, trained, hdiag, tables.plain, inner, tolerance)) is not None:
        runs.append(qat)
    if filler.sens:
        runs.append(replace(filler.allocate(by_proxy(tables.full), inner, tolerance), name=Contender.FILL_PROXY))
    records, k = records_grid(filler, Contender.RECORDS, inner, hdiag, filler.sens, False)
    # with corrections the same k costs more bytes, so every k below the plain grid's is too big
    records_lqer, _ = records_grid(filler, Contender.RECORDS_LQER, inner, hdiag, filler.sens, True, lo=k - 1)
    runs += [a for a in (records, records_lqer) if a is not None]
    contended = lap()
    for run in runs:
        run.predicted = filler.predicted(run.choice) if filler.sens else None
    predicted = lap()
    own = [r for r in runs if r.name in PREDICTED]
    passed = [r for r in own if r is not best_predicted(own)] if filler.sens else []
    runs = [r for r in runs if all(r is not p for p in passed)]  # judged by prediction: only the best is scored
    for run in runs:
        say(f"scoring {run.name}")
        run.windows = [float(x) for x in score(run.container)]
        run.loss = sum(run.windows) / len(run.windows)
    scored = lap()
    best, why = pick(runs)
    record = contenders_meta(runs)
    data = filler.build(best.choice, {CONTENDERS_KEY: record, CHOSEN_KEY: str(best.name)})
    if len(data) > budget:  # the record outgrew its reserve: ship without it rather than over the budget
        data = best.container
    log = [*main.log, *(line for r in [*runs, *passed][1:] for line in r.log)]
    log += [f"contender {r.name}: {len(r.container):,} bytes, predicted rise {r.predicted:.6g}, not scored "
            f"(its prediction is behind {best_predicted(own).name}'s)" for r in passed]
    log += [f"contender {r['name']}: {r['bytes']:,} bytes, held-out loss {r['loss']:.6f}"
            + (f", predicted rise {r['predicted']:.6g}" if "predicted" in r else "") for r in record]
    log.append(f"chosen: {best.name} ({len(data):,} bytes, budget {budget:,}): {why}")
    log.append(f"time: fixed tensors and estimates {estimated:.1f}s, allocation {allocated:.1f}s, other contenders "
               f"{contended:.1f}s, exact predictions {predicted:.1f}s, scoring {scored:.1f}s")
    return Allocation(data, best.choice, best.steps, log, best.name, best.loss, record, best.windows, best.predicted)
