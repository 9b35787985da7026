"""``--fill``: encode a state dict into a container of at most ``budget`` bytes, as close under
it as ``tolerance`` allows, spending the bytes where they buy the most quality.

Every matrix whose pipeline rule starts with a per-row grid quantizer (``rtn``, ``gptq`` or a
plugin on their parameters) and does not say ``allocate = false`` is allocatable: the
allocator (``allocate.py``) picks its bits, clip and low-rank correction (and rate-aware
rounding strength, when offered); the rest of its chain (the coder) stays as the rule says.
Other tensors are encoded as their rules say. The loop:

1. estimate every allocatable tensor's candidates with round-to-nearest (once);
2. solve the Lagrangian allocation for the bytes left after the fixed tensors and overhead;
3. encode the chosen candidates exactly (by the rule's quantizer, GPTQ where it says gptq, or
   by round-to-nearest where that leaves the lower predicted loss; cached per choice), write
   the container, and measure it;
4. correct each tensor's estimated rates by measured/estimated for its chosen candidate, and
   repeat from 2 until the container lands in ``[budget * (1 - tolerance), budget]``;
5. if the discrete choices straddle that window, step single tensors up (or down) the rate
   ladder, best distortion per byte first, until it lands or no step fits.

**Closed loop.** A prediction of the loss is still a prediction. Given ``score`` (the real
cross-entropy of a container's weights on held-out *training* tokens, one mean per window,
supplied by the caller, who has the model), the final contenders are all built within the
budget, scored, and their loss rise is predicted again from their exact (GPTQ) weights
(:data:`CONTENDERS`):

* ``fill``: the allocation by predicted loss (sensitivities; the proxy without them);
* ``fill-no-lqer``: the same without low-rank corrections (the estimates are round-to-nearest,
  and what a correction buys on top of GPTQ can be less than it buys on round-to-nearest);
* ``fill-no-cols``: the same without column scales (when any were offered): the estimates are
  round-to-nearest, and GPTQ with a correction can do far better on a matrix with a few
  dominant inputs than round-to-nearest predicts (on one small GPT, offering column scales
  raised the exact weights' predicted rise from 0.141 to 0.188 and val_bpb by 0.018; on
  another it lowered both, val_bpb by 0.031);
* ``fill-proxy``: the allocation by the Hessian-diagonal proxy (when sensitivities are given);
* ``qat``: when the weights were trained toward a plan (budget-aware QAT, ``qat_plan.py``), the
  plan's grids (column scales from this build's calibration), rounded to nearest as the fake
  quantizer rounded (GPTQ would move the weights off the points training settled them on),
  stepped along each tensor's ladder if they do not fit this budget; judged by its score against the predicted choice (a predicted rise is
  measured from the float weights, and after QAT the model that trained is the quantized one);
* ``records``: the records' single grid, int6 on every matrix and int7 on the embedding,
  SDClip at the smallest ``k`` whose exact container fits (behind an entropy coder ``k`` sets the
  step, so it is the knob that fits the bytes);
* ``records+lqer``: the same with a rank-4 correction on the three matrices of largest error
  (the #1 record's choice of tensors), ``k`` refit.

Which one ships (:func:`pick`): between golfpack's own allocations by the predicted loss
(:data:`PREDICTED`: ``fill``, ``fill-no-lqer`` and ``fill-no-cols`` differ only in which
candidates were offered, so the prediction that made them judges them, on their exact weights), or ``qat
(:data:`TRAINED`) if it scores lower than that choice; then the guards
(``fill-proxy`` and the records' recipes, which do not trust the sensitivities) replace that
choice if one scores lower on the held-out tokens by more than :data:`SIGNIFICANT` standard
errors of the paired per-window difference. Without sensitivities, the lowest score ships.
Why not the lowest score always: a few thousand held-out tokens measure a difference of 1e-3
nats, not of 1e-5 (on the panel's AdamW model the score put ``fill`` 1.6e-5 nats ahead of
``fill-no-lqer``, while validation and the prediction both put it well behind), and on a model
trained for several epochs they are tokens it has learned (on the panel's LoopLM they put
``fill-no-lqer`` 0.0024 nats ahead of ``fill``, validation 0.0005 bpb behind). The guards are
what a measurement can decide: a prediction gone wrong as a whole. So the shipped container
never scores significantly worse, on those tokens, than the records' recipe coded by this
pipeline. The contenders, their scores and predictions go into the container's meta
(``inspect``).

Deterministic: the same inputs give the same container.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import torch

from .allocate import (LQER_RANKS, RDOQ, Candidate, by_proxy, candidates, cancelling_hessians, estimate,
                       hessian_diagonals, ladder_step, loss_rise, pareto, solve)
from .decoders.chain import DecoderSpec, decode_container
from .decoders.container import read_container, write_container
from .encoders.intq import RTN, QuantParams
from .pipeline import Record, encode_tensor, record_bytes
from .rules import PipelineSpec, Rule
from .stage import Stage, StageError

MAX_SOLVES = 8
MAX_STEPS = 64
CONTENDERS = ("fill", "fill-no-lqer", "fill-no-cols", "qat", "fill-proxy", "records", "records+lqer")
PREDICTED = ("fill", "fill-no-lqer", "fill-no-cols")  # judged by the predicted loss
TRAINED = "qat"  # judged by its score against the predicted choice; the other contenders are guards
SIGNIFICANT = 2.0  # standard errors by which a guard's measured score overrides the prediction
RECORD_BITS, RECORD_EMBEDDING_BITS = 6, 7
RECORD_K = (10.0, 11.5, 12.85, 14.0, 16.0, 18.0, 20.0, 23.0, 26.0, 30.0, 35.0, 40.0, 50.0, 64.0)
RECORD_LQER_TENSORS, RECORD_LQER_RANK = 3, 4

# The allocation as the container's meta stores it, per tensor: the one schema of that record
# (``packer/ledger.py`` reads it back as untrusted input).
ALLOCATION_FIELDS = {"bits": int, "clip": str, "rdoq": float, "lqer": int, "estimated_bytes": int,
                     "distortion": float}
# ... and the contenders, in order: {"name", "bytes", "loss"[, "predicted"]} (loss: mean nats per
# token; predicted: the predicted loss rise of its exact weights, when sensitivities were given).
CONTENDER_FIELDS = {"name": str, "bytes": int, "loss": float}
PREDICTED_FIELD = ("predicted", float)

Score = Callable[[bytes], Sequence[float]]  # container -> its weights' mean cross-entropy per held-out window


@dataclass
class Allocation:
    """What ``fill`` chose per allocatable tensor, the container, and how it got there."""

    container: bytes
    choice: dict[str, Candidate]
    steps: int = 0
    log: list[str] = field(default_factory=list)
    name: str = "fill"  # which contender this is
    loss: float | None = None  # its score, when scored: the mean of ``windows``
    contenders: list[dict] = field(default_factory=list)  # every contender scored (CONTENDER_FIELDS)
    windows: list[float] = field(default_factory=list)  # its per-window scores
    predicted: float | None = None  # predicted loss rise of its exact weights (with sensitivities)


def allocation_meta(choice: Mapping[str, Candidate]) -> dict:
    """The allocation as the container's meta stores it (``ALLOCATION_FIELDS``; inspect shows it)."""
    return {n: {"bits": c.bits, "clip": c.clip, "rdoq": float(c.rdoq), "lqer": c.lqer,
                "estimated_bytes": round(c.rate / 8), "distortion": float(f"{c.distortion:.6g}")}
            for n, c in sorted(choice.items())}


def allocates(rule: Rule) -> bool:
    """Whether the fill chooses the grid of tensors under ``rule``: it allows it, and its chain
    starts with a per-row grid quantizer."""
    return rule.allocate and isinstance(rule.stages[0].params, QuantParams)


def allocatable(spec: PipelineSpec, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    return [n for n, t in state_dict.items() if t.ndim == 2 and t.numel() > 0 and allocates(spec.rule_for(n))]


def used_decoders(spec: PipelineSpec, names: Iterable[str]) -> dict[str, DecoderSpec]:
    """The decoders of the stages ``spec`` (roles resolved) codes ``names`` with, and of those a
    fill may use beyond them: round-to-nearest on the grid of any allocatable rule
    (:meth:`Filler.encoded`, the ``qat`` contender; the same decoder as ``gptq``'s). Each stage
    names its own decoder, so no registry is consulted: a records script's packed stages suffice."""
    names = list(names)
    stages = {type(s) for n in names for s in spec.rule_for(n).stages}
    if any(allocates(spec.rule_for(n)) for n in names):
        stages.add(RTN)
    return {cls.name: cls.decoder() for cls in sorted(stages, key=lambda c: c.name)}


def with_grid(stages: tuple[Stage, ...], cand: Candidate) -> tuple[Stage, ...]:
    """The rule's chain with its quantizer's bits, clip, column scales, rdoq and lqer replaced by
    the candidate's (and by round-to-nearest for a trained grid)."""
    first = stages[0]
    if cand.trained:
        return (RTN(bits=cand.bits, clip=cand.clip, colscale=cand.colscale), *stages[1:])
    params = {**dataclasses.asdict(first.params), "bits": cand.bits, "clip": cand.clip, "rdoq": cand.rdoq,
              "lqer": cand.lqer, "colscale": cand.colscale}
    return (type(first)(**params), *stages[1:])


def rounded(stage: Stage) -> RTN:
    """Round-to-nearest on ``stage``'s grid (its bits, clip, column scales, rdoq and lqer)."""
    return RTN(**{f.name: getattr(stage.params, f.name) for f in dataclasses.fields(QuantParams)})


class Filler:
    """One state dict's encodes, cached per (tensor, candidate), and the containers built from
    them: every contender is a choice of one candidate per allocatable tensor."""

    def __init__(self, state_dict: Mapping[str, torch.Tensor], spec: PipelineSpec,
                 hessians: Mapping[str, torch.Tensor], meta: dict, say: Callable[[str], None],
                 sensitivity: Mapping[str, torch.Tensor], decoders: Mapping[str, DecoderSpec] | None = None) -> None:
        self.state_dict, self.spec, self.hessians, self.meta, self.say = state_dict, spec, hessians, meta, say
        self.decoders = used_decoders(spec, state_dict) if decoders is None else decoders
        self.names = allocatable(spec, state_dict)
        self.sens = {n: s for n, s in sensitivity.items() if n in self.names and s.shape == state_dict[n].shape}
        self.cancelling = cancelling_hessians(hessians, {n: "embedding" for n in self.names if self.is_embedding(n)})
        self.fixed = {n: encode_tensor(n, t, spec.rule_for(n).stages, hessians.get(n))
                      for n, t in state_dict.items() if n not in self.names}
        self.cache: dict[tuple[str, Candidate], Record] = {}
        self.rises: dict[tuple[str, Candidate], float] = {}

    def is_embedding(self, n: str) -> bool:
        """By its role, or by the baseline's names where the spec has no roles."""
        return self.spec.roles.get(n) == "embedding" or (not self.spec.roles and n in ("tok_emb.weight", "lm_head.weight"))

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
            record = encode_tensor(n, self.state_dict[n], stages, self.hessians.get(n))
            if n in self.sens and not isinstance(stages[0], RTN):
                other = encode_tensor(n, self.state_dict[n], (rounded(stages[0]), *stages[1:]), self.hessians.get(n))
                rise, other_rise = self.exact_rise(n, record), self.exact_rise(n, other)
                # ties: the rule's quantizer
                record, self.rises[key] = (other, other_rise) if other_rise < rise else (record, rise)
            self.cache[key] = record
        return self.cache[key]

    def exact_rise(self, n: str, record: Record) -> float:
        """The predicted loss rise of tensor ``n``'s weights as ``record`` decodes them."""
        decoded = decode_container(read_container(write_container([record], {})), self.decoders)
        return loss_rise(self.state_dict[n], decoded[n].float(), self.sens[n], self.cancelling.get(n))

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
        return write_container(records, {**self.meta, "allocation": allocation_meta(choice), **(extra or {})})

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
            choice = solve(table, 8.0 * (budget - overhead), scale)
            data = self.build(choice)
            measured = self.measured(choice)
            result = Allocation(data, choice)
            result.log.append(f"solve {solves}: {len(data):,} bytes (budget {budget:,})")
            if lo_ok <= len(data) <= budget:
                return result
            overhead = len(data) - sum(measured.values())
            scale = {n: measured[n] * 8 / c.rate if c.rate > 0 else 1.0 for n, c in choice.items()}
        return self._step(result, table, scale, budget, lo_ok)

    def _step(self, result: Allocation, table: Mapping[str, list[Candidate]], scale: Mapping[str, float],
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

    def trained(self, plan: Mapping[str, tuple[int, str, float]], hdiag: Mapping[str, torch.Tensor],
                table: Mapping[str, list[Candidate]], budget: int, tolerance: float) -> Allocation | None:
        """The ``qat`` contender: the plan's grids (None if it does not cover every allocatable
        tensor, or plans column scales where this build has no Hessian), stepped along ladders
        of round-to-nearest grids (the plan's among them, with its column-scale power) until
        the container lands in the window."""
        if any(n not in plan or (plan[n][2] and n not in hdiag) for n in self.names):
            return None
        choice, ladders = {}, {}
        for n in self.names:
            bits, clip, colscale = plan[n]
            c = dataclasses.replace(estimate(self.state_dict[n], bits, clip, hdiag.get(n), sens=self.sens.get(n),
                                             colscale=colscale), trained=True)
            ladder = pareto([c, *(dataclasses.replace(x, trained=True) for x in table[n]
                             if not (x.lqer or x.rdoq) and x.colscale == colscale)])
            ladders[n] = ladder if c in ladder else sorted([*ladder, c], key=lambda x: (x.rate, x.distortion))
            choice[n] = c
        result = Allocation(self.build(choice), choice, name="qat")
        result.log.append(f"qat: the trained grids, {len(result.container):,} bytes (budget {budget:,})")
        lo_ok = budget * (1 - tolerance)
        if lo_ok <= len(result.container) <= budget:
            return result
        measured = self.measured(choice)
        scale = {n: measured[n] * 8 / c.rate if c.rate > 0 else 1.0 for n, c in choice.items()}
        return self._step(result, ladders, scale, budget, lo_ok)

    def uniform(self, name: str, budget: int, hdiag: Mapping[str, torch.Tensor],
                sens: Mapping[str, torch.Tensor], lqer: bool, lo: int = -1) -> tuple[Allocation | None, int]:
        """The records' single grid at the smallest SDClip ``k`` of :data:`RECORD_K` whose exact
        container fits ``budget`` (None if none does), and its index; found by bisection over
        exact builds (bytes fall as ``k`` grows; estimates alone were off by the coder's
        per-tensor overhead) above index ``lo``, known not to fit. ``lqer``: rank 4 on the three
        matrices whose error at the smallest ``k`` has the largest Frobenius norm, the record's
        choice of tensors."""
        def bits(n: str) -> int:
            return RECORD_EMBEDDING_BITS if self.is_embedding(n) else RECORD_BITS

        ranked: set[str] = set()
        if lqer:
            errs = {n: estimate(self.state_dict[n], bits(n), f"sdclip:{RECORD_K[0]:g}", None).proxy for n in self.names}
            ranked = set(sorted(errs, key=lambda n: (-errs[n], n))[:RECORD_LQER_TENSORS])
        choices: dict[int, dict[str, Candidate]] = {}
        built: dict[int, bytes] = {}

        def fits(i: int) -> bool:  # estimates (for the allocation record) and the exact build, of the k tried only
            if i not in built:
                choices[i] = {n: estimate(self.state_dict[n], bits(n), f"sdclip:{RECORD_K[i]:g}", hdiag.get(n), 0.0,
                                          RECORD_LQER_RANK if n in ranked else 0, sens.get(n)) for n in self.names}
                built[i] = self.build(choices[i])
            return len(built[i]) <= budget

        hi = len(RECORD_K) - 1  # invariant: fits(hi); lo is -1 or does not fit
        if lo + 1 < hi and fits(lo + 1):  # a known bound is usually tight (and k's smallest often fits): try it first
            hi = lo + 1
        elif not fits(hi):
            return None, hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if fits(mid):
                hi = mid
            else:
                lo = mid
        return Allocation(built[hi], choices[hi], name=name,
                          log=[f"{name}: sdclip:{RECORD_K[hi]:g}, {len(built[hi]):,} bytes ({len(built)} builds)"]), hi


def fill(state_dict: Mapping[str, torch.Tensor], spec: PipelineSpec, hessians: Mapping[str, torch.Tensor] | None,
         budget: int, meta: dict, tolerance: float = 0.001,
         progress: Callable[[str], None] | None = None, rdoq: Sequence[float] = RDOQ,
         lqer: Sequence[int] = LQER_RANKS, sensitivity: Mapping[str, torch.Tensor] | None = None,
         score: Score | None = None, decoders: Mapping[str, DecoderSpec] | None = None,
         trained: Mapping[str, tuple[int, str, float]] | None = None) -> Allocation:
    """The container that fills ``budget``: the allocation by predicted loss, or, with
    ``score``, the contender :func:`pick` ships (module docstring). ``decoders``: the table that
    decodes contenders for their exact predictions (default: :func:`used_decoders`);
    ``trained``: the grids (bits, clip, column-scale power) the weights were trained toward, per tensor."""
    say = progress or (lambda _: None)
    hessians = hessians or {}
    clock = [time.perf_counter()]

    def lap() -> float:
        clock.append(time.perf_counter())
        return clock[-1] - clock[-2]

    filler = Filler(state_dict, spec, hessians, meta, say, sensitivity or {}, decoders)
    if not filler.names:
        raise StageError("--fill: no tensor's rule starts with a grid quantizer (rtn, gptq); nothing to allocate")
    sens = filler.sens
    hdiag = hessian_diagonals(hessians, filler.names)
    full = {}
    for n in filler.names:
        say(f"estimating {n}")
        full[n] = candidates(state_dict[n], hdiag.get(n), rdoq=rdoq, lqer=lqer, sens=sens.get(n))
    table = {n: pareto(c) for n, c in full.items()}
    estimated = lap()
    plain = {n: pareto(c for c in cands if not c.lqer) for n, cands in full.items()}
    offered = [c for cands in table.values() for c in cands]
    variants = {}  # the other tables the prediction judges, where they differ from ``table``
    if any(c.lqer for c in offered):
        variants["fill-no-lqer"] = plain
    if any(c.colscale for c in offered):
        variants["fill-no-cols"] = {n: pareto(c for c in cands if not c.colscale) for n, cands in full.items()}
    if score is None:
        # nothing measures: the weights trained toward a plan ship its grids
        alloc = filler.trained(trained, hdiag, plain, budget, tolerance) if trained else None
        if alloc is None:
            runs = [filler.allocate(table, budget, tolerance)]
            if sens:  # no scores, but the exact weights' predicted rise can still choose
                runs += [dataclasses.replace(filler.allocate(t, budget, tolerance), name=name)
                         for name, t in variants.items()]
            for run in runs:
                run.predicted = filler.predicted(run.choice) if sens else None
            alloc = best_predicted(runs) if sens else runs[0]
        alloc.log.append(f"time: fixed tensors and estimates {estimated:.1f}s, allocation {lap():.1f}s")
        return alloc
    reserve = contenders_reserve(meta)
    inner = budget - reserve
    # the record written is up to a few dozen bytes smaller than its reserve: a quarter of the
    # window keeps the container with it in the whole window, down to budgets of some 70 KB
    tolerance = tolerance / 4
    main = filler.allocate(table, inner, tolerance)
    allocated = lap()
    runs = [main, *(dataclasses.replace(filler.allocate(t, inner, tolerance), name=name) for name, t in variants.items())]
    if trained and (qat := filler.trained(trained, hdiag, plain, inner, tolerance)) is not None:
        runs.append(qat)
    if sens:
        runs.append(dataclasses.replace(filler.allocate(by_proxy(full), inner, tolerance), name="fill-proxy"))
    records, k = filler.uniform("records", inner, hdiag, sens, False)
    # with corrections the same k costs more bytes, so every k below the plain grid's is too big
    records_lqer, _ = filler.uniform("records+lqer", inner, hdiag, sens, True, lo=k - 1)
    runs += [a for a in (records, records_lqer) if a is not None]
    contended = lap()
    for run in runs:
        run.predicted = filler.predicted(run.choice) if sens else None
    predicted = lap()
    own = [r for r in runs if r.name in PREDICTED]
    passed = [r for r in own if r is not best_predicted(own)] if sens else []
    runs = [r for r in runs if all(r is not p for p in passed)]  # judged by prediction: only the best is scored
    for run in runs:
        say(f"scoring {run.name}")
        run.windows = [float(x) for x in score(run.container)]
        run.loss = sum(run.windows) / len(run.windows)
    scored = lap()
    best, why = pick(runs)
    record = [{"name": r.name, "bytes": len(r.container), "loss": float(f"{r.loss:.6f}")}
              | ({} if r.predicted is None else {"predicted": float(f"{r.predicted:.6g}")}) for r in runs]
    data = filler.build(best.choice, {"contenders": record, "chosen": best.name})
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


def best_predicted(runs: Sequence[Allocation]) -> Allocation:
    """The allocation of least predicted rise (ties: the earlier contender)."""
    return min(runs, key=lambda r: (r.predicted, CONTENDERS.index(r.name)))


def pick(runs: Sequence[Allocation]) -> tuple[Allocation, str]:
    """The contender that ships, and why (module docstring): of :data:`PREDICTED`, the least
    predicted rise (:data:`TRAINED` instead if it scores lower), unless a guard's score beats it
    by more than ``SIGNIFICANT`` standard errors of the paired per-window difference; the lowest
    score when nothing was predicted."""
    order = lambda r: CONTENDERS.index(r.name)  # noqa: E731
    lowest = min(runs, key=lambda r: (r.loss, order(r)))
    own = [r for r in runs if r.name in PREDICTED]
    if not own or any(r.predicted is None for r in runs):
        return lowest, "lowest held-out loss"
    chosen, why = best_predicted(own), "least predicted rise"
    qat = next((r for r in runs if r.name == TRAINED), None)
    if qat is not None and qat.loss < chosen.loss:
        chosen, why = qat, f"the trained grids, {chosen.loss - qat.loss:.2g} below {chosen.name}'s held-out loss"
    guard = min((r for r in runs if r.name not in (*PREDICTED, TRAINED)), key=lambda r: (r.loss, order(r)),
                default=None)
    if guard is None or guard.loss >= chosen.loss:
        return chosen, f"{why}; no guard scored lower"
    diff = [a - b for a, b in zip(chosen.windows, guard.windows)]
    mean = sum(diff) / len(diff)
    se = (sum((d - mean) ** 2 for d in diff) / max(len(diff) - 1, 1) / len(diff)) ** 0.5
    if mean > SIGNIFICANT * se:
        return guard, (f"held-out loss {mean:.2g} below {chosen.name} ({why}), "
                       f"{mean / se if se else float('inf'):.1f} standard errors")
    return chosen, (f"{why}; {guard.name} scored {mean:.2g} lower, within {SIGNIFICANT:g} "
                    f"standard errors ({se:.2g})")


def contenders_reserve(meta: dict) -> int:
    """Bytes the contenders' record may add to the container's meta: measured on the widest
    record that can be written, plus slack for the compressor. At most all contenders but one
    are recorded (with sensitivities one of golfpack's own two goes unscored; without them
    there is no ``fill-proxy``), and a reserve much wider than the record would leave the
    container below the fill's window on a small budget."""
    names = sorted(CONTENDERS, key=lambda n: (-len(n), n))[: len(CONTENDERS) - 1]
    widest = [{"name": n, "bytes": 10**9, "loss": 99.999999, "predicted": 1.23456e-100} for n in names]
    return (len(write_container([], {**meta, "contenders": widest, "chosen": CONTENDERS[-1]}))
            - len(write_container([], meta)) + 32)
