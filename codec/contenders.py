"""The closed loop's contenders: what each one is, which ships, and how the container's meta
records them (the one owner of that vocabulary; ``packer/ledger.py`` reads the record back).

A prediction of the loss is still a prediction. Given a score (the real cross-entropy of a
container's weights on held-out *training* tokens, one mean per window), ``fill`` builds every
contender within the budget, scores it, and predicts its loss rise again from its exact (GPTQ)
weights:

* ``fill``: the allocation by predicted loss (sensitivities; the Hessian proxy without them);
* ``fill-no-lqer``: the same without low-rank corrections (the estimates are round-to-nearest,
  and what a correction buys on top of GPTQ can be less than it buys on round-to-nearest);
* ``fill-no-cols``: the same without column scales (when any were offered): GPTQ with a
  correction can do far better on a matrix with a few dominant inputs than round-to-nearest
  predicts (docs/benchmarks.md);
* ``fill-proxy``: the allocation by the Hessian-diagonal proxy (when sensitivities are given);
* ``qat``: when the weights were trained toward a plan (budget-aware QAT, ``qat_plan.py``), the
  plan's grids rounded to nearest as the fake quantizer rounded (GPTQ would move the weights off
  the points training settled them on), stepped along each tensor's ladder if they do not fit;
* ``records``: the records' single grid, int6 on every matrix and int7 on the embedding, SDClip
  at the smallest ``k`` whose exact container fits (behind an entropy coder ``k`` sets the step,
  so it is the knob that fits the bytes);
* ``records+lqer``: the same with a rank-4 correction on the three matrices of largest error
  (the #1 record's choice of tensors), ``k`` refit.

Which one ships (:func:`pick`): of golfpack's own allocations (:data:`PREDICTED`, which differ
only in the candidates offered), the least predicted rise on their exact weights, or ``qat``
if it scores lower than that; then a guard (``fill-proxy`` and the records' recipes, which do
not trust the sensitivities) replaces that choice only if it scores lower by more than
:data:`SIGNIFICANT` standard errors of the paired per-window difference. Without sensitivities
the lowest score ships. Why not the lowest score always: a few thousand held-out tokens
measure 1e-3 nats, not 1e-5, and on a model trained for several epochs they are tokens it has
learned (docs/benchmarks.md). So the shipped container never scores significantly worse, on
those tokens, than the records' recipe coded by the same pipeline.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import torch

from .allocate import Candidate, estimate, pareto
from .decoders.container import write_container
from .decoders.grid import Grid

if TYPE_CHECKING:
    from .fill import Filler


class Contender(str, Enum):
    """The contenders' names, in the order that breaks ties (earlier wins)."""

    __str__ = str.__str__
    __format__ = str.__format__
    FILL = "fill"
    FILL_NO_LQER = "fill-no-lqer"
    FILL_NO_COLS = "fill-no-cols"
    QAT = "qat"
    FILL_PROXY = "fill-proxy"
    RECORDS = "records"
    RECORDS_LQER = "records+lqer"


CONTENDERS = tuple(c.value for c in Contender)
PREDICTED = (Contender.FILL, Contender.FILL_NO_LQER, Contender.FILL_NO_COLS)  # judged by the predicted loss
TRAINED = Contender.QAT  # judged by its score against the predicted choice; the other contenders are guards
SIGNIFICANT = 2.0  # standard errors by which a guard's measured score overrides the prediction
RECORD_BITS, RECORD_EMBEDDING_BITS = 6, 7
RECORD_K = (10.0, 11.5, 12.85, 14.0, 16.0, 18.0, 20.0, 23.0, 26.0, 30.0, 35.0, 40.0, 50.0, 64.0)
RECORD_LQER_TENSORS, RECORD_LQER_RANK = 3, 4

# The container meta's keys for the fill, and the schema of each record (read back by
# ``packer/ledger.py`` as untrusted input).
ALLOCATION_KEY, CONTENDERS_KEY, CHOSEN_KEY = "allocation", "contenders", "chosen"
# per allocatable tensor:
ALLOCATION_FIELDS = {"bits": int, "clip": str, "rdoq": float, "lqer": int, "estimated_bytes": int,
                     "distortion": float}
# per contender scored, in order: {"name", "bytes", "loss"[, "predicted"]} (loss: mean nats per
# token; predicted: the predicted loss rise of its exact weights, when sensitivities were given)
CONTENDER_FIELDS = {"name": str, "bytes": int, "loss": float}
PREDICTED_FIELD = ("predicted", float)


@dataclass
class Allocation:
    """One contender: its container, its choice per allocatable tensor, and how it got there."""

    container: bytes
    choice: dict[str, Candidate]
    steps: int = 0
    log: list[str] = field(default_factory=list)
    name: Contender = Contender.FILL
    loss: float | None = None  # its score, when scored: the mean of ``windows``
    contenders: list[dict] = field(default_factory=list)  # every contender scored (CONTENDER_FIELDS)
    windows: list[float] = field(default_factory=list)  # its per-window scores
    predicted: float | None = None  # predicted loss rise of its exact weights (with sensitivities)


def allocation_meta(choice: Mapping[str, Candidate]) -> dict:
    """The allocation as the container's meta stores it (``ALLOCATION_FIELDS``; inspect shows it)."""
    return {n: {"bits": c.bits, "clip": c.clip, "rdoq": float(c.rdoq), "lqer": c.lqer,
                "estimated_bytes": round(c.rate / 8), "distortion": float(f"{c.distortion:.6g}")}
            for n, c in sorted(choice.items())}


def contenders_meta(runs: Sequence[Allocation]) -> list[dict]:
    """The scored contenders as the container's meta stores them (``CONTENDER_FIELDS``)."""
    return [{"name": str(r.name), "bytes": len(r.container), "loss": float(f"{r.loss:.6f}")}
            | ({} if r.predicted is None else {PREDICTED_FIELD[0]: float(f"{r.predicted:.6g}")}) for r in runs]


def contenders_reserve(meta: dict) -> int:
    """Bytes the contenders' record may add to the container's meta: measured on the widest
    record that can be written, plus slack for the compressor. At most all contenders but one
    are recorded (with sensitivities one of golfpack's own two goes unscored; without them
    there is no ``fill-proxy``), and a reserve much wider than the record would leave the
    container below the fill's window on a small budget."""
    names = sorted(CONTENDERS, key=lambda n: (-len(n), n))[: len(CONTENDERS) - 1]
    widest = [{"name": n, "bytes": 10**9, "loss": 99.999999, "predicted": 1.23456e-100} for n in names]
    return (len(write_container([], {**meta, CONTENDERS_KEY: widest, CHOSEN_KEY: CONTENDERS[-1]}))
            - len(write_container([], meta)) + 32)


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


def records_grid(filler: Filler, name: Contender, budget: int, hdiag: Mapping[str, torch.Tensor],
                 sens: Mapping[str, torch.Tensor], lqer: bool, lo: int = -1) -> tuple[Allocation | None, int]:
    """The records' single grid at the smallest SDClip ``k`` of :data:`RECORD_K` whose exact
    container fits ``budget`` (None if none does), and its index; found by bisection over
    exact builds (bytes fall as ``k`` grows; estimates alone were off by the coder's
    per-tensor overhead) above index ``lo``, known not to fit. ``lqer``: rank 4 on the three
    matrices whose error at the smallest ``k`` has the largest Frobenius norm, the record's
    choice of tensors."""
    state = filler.state_dict
    bits: Callable[[str], int] = lambda n: RECORD_EMBEDDING_BITS if filler.is_embedding(n) else RECORD_BITS  # noqa: E731
    ranked: set[str] = set()
    if lqer:
        errs = {n: estimate(state[n], bits(n), f"sdclip:{RECORD_K[0]:g}", None).proxy for n in filler.names}
        ranked = set(sorted(errs, key=lambda n: (-errs[n], n))[:RECORD_LQER_TENSORS])
    choices: dict[int, dict[str, Candidate]] = {}
    built: dict[int, bytes] = {}

    def fits(i: int) -> bool:  # estimates (for the allocation record) and the exact build, of the k tried only
        if i not in built:
            choices[i] = {n: estimate(state[n], bits(n), f"sdclip:{RECORD_K[i]:g}", hdiag.get(n), 0.0,
                                      RECORD_LQER_RANK if n in ranked else 0, sens.get(n)) for n in filler.names}
            built[i] = filler.build(choices[i])
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


def trained_grids(filler: Filler, plan: Mapping[str, Grid], hdiag: Mapping[str, torch.Tensor],
                  table: Mapping[str, list[Candidate]], budget: int, tolerance: float) -> Allocation | None:
    """The ``qat`` contender: the plan's grids (None if it does not cover every allocatable
    tensor, or plans column scales where this build has no Hessian), stepped along ladders of
    round-to-nearest grids (the plan's among them, with its column-scale power) until the
    container lands in the window."""
    if any(n not in plan or (plan[n].colscale and n not in hdiag) for n in filler.names):
        return None
    choice, ladders = {}, {}
    for n in filler.names:
        g = plan[n]
        c = replace(estimate(filler.state_dict[n], g.bits, g.clip, hdiag.get(n), sens=filler.sens.get(n),
                             colscale=g.colscale), trained=True)
        ladder = pareto([c, *(replace(x, trained=True) for x in table[n] if not (x.lqer or x.rdoq or x.rowstep)
                              and x.colscale == g.colscale)])
        ladders[n] = ladder if c in ladder else sorted([*ladder, c], key=lambda x: (x.rate, x.distortion))
        choice[n] = c
    result = Allocation(filler.build(choice), choice, name=Contender.QAT)
    result.log.append(f"qat: the trained grids, {len(result.container):,} bytes (budget {budget:,})")
    lo_ok = budget * (1 - tolerance)
    if lo_ok <= len(result.container) <= budget:
        return result
    measured = filler.measured(choice)
    scale = {n: measured[n] * 8 / c.rate if c.rate > 0 else 1.0 for n, c in choice.items()}
    return filler.step(result, ladders, scale, budget, lo_ok)
