"""The grids budget-aware QAT trains toward: the loss-aware allocation of a byte budget, on the
weights as they are when QAT switches on.

``fill`` (codec/fill.py) chooses each matrix's bits and clip for the *final* weights; QAT
that imitates the rules' written grids trains toward grids the fill then leaves. This plan is
the same Lagrangian allocation (``allocate.py``: candidates estimated with round-to-nearest,
distortion the predicted loss rise from the sensitivities, else the Hessian proxy) made
during training, so the weights can settle onto the grids that will ship. Two differences:

* no low-rank corrections or rate-aware rounding: a fake quantizer trains toward a grid, and a
  correction is fitted to the error that is left at export. Column scales are offered (a grid
  of ``w / cols``), computed from the Hessians the plan is made with; the build recomputes them
  from its own calibration (budget-aware QAT adds noise of the grid's step, so the weights do
  not sit on the plan's exact grid points);
* one solve on the estimated rates (no exact encode: GPTQ on every matrix would cost more
  than the training steps it steers), then single rungs up the ladders while the estimate
  fits, as ``fill`` steps into its window (the solve alone left a small model's 2.5-bit plan
  9% under its budget, training toward coarser grids than the build then ships). The fixed
  tensors (controls, ``allocate = false``) are encoded exactly (``fill.split_tensors`` sorts and
  encodes them), so only the matrices' entropy-coded rates are estimates.

Build-only (the trainer is shipped): an entry point that has the codec hands
:func:`grid_planner` to the trainer (``trainer/qat.py: PlannerFactory``).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import partial
from typing import Callable, Mapping

import torch

from .allocate import Candidate, candidates, climb, hessian_diagonals, pareto, solve, total_rate
from .decoders.container import write_container
from .encoders.intq import column_scales
from .allocatable import split_tensors
from .pipeline import record_bytes
from .registry import Registered
from .rules import PipelineSpec
from .spec import load_spec, spec_from_doc


@dataclass(frozen=True)
class GridPlan:
    """One allocation: the grid per allocatable tensor, and what it is predicted to cost."""

    grids: dict[str, Candidate]
    predicted_bytes: int  # the whole container: fixed tensors exactly, the allocation estimated
    budget: int
    classes: dict[str, str]  # tensor -> the name of its rule (what inspect groups it under)
    cols: dict[str, tuple[float, ...]]  # the column scales of the grids that have them

    def summary(self) -> str:
        """Per class, how many tensors got each grid: ``matrices:6b/sdclip:12.85x8,5b/sdclip:10x4``."""
        counts = Counter((self.classes[n], c.bits, c.clip + (f"/cols:{c.colscale:g}" if c.colscale else ""))
                         for n, c in self.grids.items())
        parts: dict[str, list[str]] = {}
        for (cls, bits, clip), k in sorted(counts.items(), key=lambda kv: (kv[0][0], -kv[0][1], kv[0][2])):
            parts.setdefault(cls, []).append(f"{bits}b/{clip}x{k}")
        return " ".join(f"{cls}:{','.join(v)}" for cls, v in parts.items())


def plan_grids(state_dict: Mapping[str, torch.Tensor], hessians: Mapping[str, torch.Tensor] | None,
               sensitivity: Mapping[str, torch.Tensor] | None, *, spec: PipelineSpec, budget: int,
               meta: dict | None = None) -> GridPlan:
    """The least-predicted-loss grids (bits, clip, column scales; no corrections, no row steps:
    a grid the fake quantizer trains toward is one a clip rule spells) whose estimated container
    fits ``budget`` bytes; ``spec`` with its roles resolved (the allocatable tensors are ``fill``'s)."""
    names, fixed, sens = split_tensors(spec, state_dict, hessians or {}, sensitivity or {})
    if not names:
        raise ValueError("budget-aware QAT: no tensor's rule starts with a grid quantizer (rtn, gptq)")
    hdiag = hessian_diagonals(hessians, names)
    overhead = sum(record_bytes(r) for r in fixed.values()) + len(write_container([], meta or {}))
    table = {n: pareto(candidates(state_dict[n], hdiag.get(n), lqer=(), sens=sens.get(n), rowstep=()))
             for n in names}
    bits = 8.0 * (budget - overhead)
    choice = climb(table, solve(table, bits), bits)
    cols = {n: tuple(column_scales(hdiag[n], c.colscale).float().tolist()) for n, c in choice.items() if c.colscale}
    return GridPlan(choice, overhead + round(total_rate(choice) / 8), budget,
                    {n: spec.rule_for(n).label for n in names}, cols)


def grid_planner(pipeline: dict, budget: int, roles: Mapping[str, str], meta: dict, *,
                 registry: Mapping[str, Registered] | None = None) -> Callable[..., GridPlan]:
    """The trainer's planner factory (``trainer/qat.py: PlannerFactory``): ``pipeline`` is a
    pipeline file's table (``PipelineSpec.to_doc``; empty: the default pipeline), ``roles`` the
    model's tensor roles, ``meta`` the container meta the budget also pays for; ``registry``:
    the stages it may name (default: the installed ones; a records script passes its packed ones)."""
    spec = (spec_from_doc(pipeline, "qat_pipeline", registry) if pipeline else load_spec("default", registry))
    spec = spec.with_roles(roles)
    return partial(plan_grids, spec=spec, budget=budget, meta=meta)
