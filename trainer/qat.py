"""Quantization-aware training: the codec's own quantizer as a straight-through fake quantizer.

Rules (:class:`QatRule`: glob, bits, clip, optional column scales) pick the grid for each
weight (first match wins). Their list form (``QatRule.to_json``) is this module's: whatever
gives rules (a config, a plan through :func:`plan_rules`, a checkpoint's resume state or its
``qat_plan``, which the build reads with ``packer/encode.py: read_plan``) is read by one strict
reader, :func:`parse_rules`. They come from one of two places:

* the pipeline spec the model will be exported with (``codec.spec.quantizer_rules``): the
  rules' written grids (``qat_rules`` in the config);
* budget-aware QAT (``qat_budget``): at the switch, and at each refresh, a *grid planner*
  allocates the byte budget on the current weights by their predicted loss (the build's
  allocator, ``codec/qat_plan.py``), so training sees the grids the build will ship. The
  planner is build-side code; the trainer only calls it (:data:`PlannerFactory`), so shipped
  training code never imports the allocator. The embedding and head are planned (their bytes
  are the budget's) and, unless ``qat_embedding`` is off, trained toward their grid too (off:
  the trainer puts a bits-0 rule for them first).

The forward pass either rounds to the grid (straight-through) or, with ``qat_noise``, adds
uniform noise of the grid's step instead: budget-aware QAT measured better that way
(docs/benchmarks.md).

Why the explicit switch: in several challenge records a QAT flag read inside a
``torch.compile``d forward was constant-folded at trace time, and QAT silently never ran.
Here turning QAT on installs a function on the modules (``weight_fn``). By default it also
resets torch.compile's caches, so the next forward is re-traced with the quantizer in it.
The trainer can instead prime both graphs during its compile warm-up and *prove* that the
compiled forward sees the switch (:func:`switch_is_visible`); only then does it switch
without a reset, saving a re-trace. Tests check that the forward pass changes either way.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Callable, Iterable, Mapping, Protocol, Sequence

import torch

from ..codec.decoders.config import first_match
from ..codec.decoders.grid import ClipRule, Grid, as_rows, quantize_rtn, read_rule, row_scales
from ..codec.decoders.container import MAX_TENSORS
from ..codec.decoders.intq import dequantize
from ..model.anatomy import tied_embeddings
from ..model.gpt import CastedLinear


MAX_RULES = MAX_TENSORS  # rules in a list (a plan has one per tensor), and
MAX_PATTERN_CHARS = 1 << 18  # characters in all its globs together (matching compiles them into one expression)


@dataclass(frozen=True)
class QatRule:
    """Weights matching ``pattern`` train toward ``grid`` (bits 0: left alone); ``cols``: the
    column scales a plan computed for a grid with them (``grid.colscale`` > 0)."""

    pattern: str
    grid: Grid
    cols: tuple[float, ...] = ()

    @property
    def bits(self) -> int:
        return self.grid.bits

    def to_json(self) -> list:
        """The config's, checkpoint's and resume state's form (``Grid.rule``)."""
        return self.grid.rule(self.pattern, self.cols)


def parse_rules(rules: Iterable[Sequence]) -> list[QatRule]:
    """Rules as a config, a plan or a checkpoint gives them (``QatRule.to_json``'s form), each
    checked: a checkpoint is untrusted, and its rules are read back on resume and by the build
    (``packer/encode.py: read_plan``)."""
    if isinstance(rules, (str, bytes, Mapping)) or not isinstance(rules, Iterable):  # a crafted resume state
        raise ValueError(f"QAT rules must be a list of [glob, bits, clip(, colscale, cols)], got {type(rules).__name__}")
    out, chars = [], 0
    for r in rules:
        if len(out) >= MAX_RULES:
            raise ValueError(f"more than {MAX_RULES} QAT rules")
        out.append(r if isinstance(r, QatRule) else parse_rule(r))
        chars += len(out[-1].pattern)
        if chars > MAX_PATTERN_CHARS:
            raise ValueError(f"QAT rules' globs hold more than {MAX_PATTERN_CHARS:,} characters together")
    return out


def parse_rule(r: object) -> QatRule:
    """One rule in ``QatRule.to_json``'s form, by the grid's one reader (``Grid.rule``'s)."""
    return QatRule(*read_rule(r))


class PlannedGrid(Protocol):
    """One tensor's entry in a plan (``codec.allocate.Candidate``)."""

    @property
    def grid(self) -> Grid: ...


class GridPlan(Protocol):
    """What a grid planner returns (``codec.qat_plan.GridPlan``)."""

    grids: Mapping[str, PlannedGrid]
    cols: Mapping[str, Sequence[float]]  # the column scales of the grids that have them
    predicted_bytes: int
    budget: int

    def summary(self) -> str: ...


def plan_rules(plan: GridPlan) -> list[QatRule]:
    """A plan's grids as rules, one per tensor in name order (its name is the glob)."""
    return [QatRule(name, g.grid, tuple(plan.cols[name]) if g.grid.colscale else ())
            for name, g in sorted(plan.grids.items())]


# weights, Hessians, sensitivities -> the plan
GridPlanner = Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]], GridPlan]
# (pipeline spec as a file's table, budget in bytes, tensor roles, container meta) -> a planner
PlannerFactory = Callable[[dict, int, Mapping[str, str], dict], GridPlanner]


PLANNER_MODULE = "golfpack.codec.qat_plan"  # build-side: imported by this name only, never one a config gives


def load_planner() -> PlannerFactory:
    """golfpack's planner factory, for a process no caller could hand one (a torchrun rank)."""
    try:
        return importlib.import_module(PLANNER_MODULE).grid_planner
    except ImportError as e:
        raise ValueError(f"budget-aware QAT needs golfpack's grid planner ({e}); train with golfpack installed, "
                         "or from a records folder, which ships it") from None


def _targets(model: torch.nn.Module):
    """Where a fake quantizer can go: every ``CastedLinear`` (a plugin model gets QAT by using
    it), and a tied embedding that declares ``head_weight_fn`` as the GPT does."""
    for name, module in model.named_modules():
        if isinstance(module, CastedLinear):
            yield f"{name}.weight", module, "weight_fn"
    if hasattr(model, "head_weight_fn"):
        for name in tied_embeddings(model):
            yield name, model, "head_weight_fn"


@lru_cache(maxsize=None)
def _quantizer(bits: int, rule: ClipRule, noise: float):
    """One function object per grid, so a compiled graph's guards match it on every switch."""
    if noise:
        return partial(noise_quantize, bits=bits, rule=rule, width=noise)
    return partial(fake_quantize, bits=bits, rule=rule)


def _rule_quantizer(rule: QatRule, weight: torch.Tensor, noise: float):
    """The quantizer of ``rule`` for ``weight`` (its column scales on the weight's device)."""
    fn = _quantizer(rule.bits, rule.grid.clip_rule, noise)
    if not rule.cols:
        return fn
    if weight.ndim != 2 or weight.shape[1] != len(rule.cols):
        raise ValueError(f"QAT rule '{rule.pattern}' has {len(rule.cols)} column scales for a weight "
                         f"of shape {list(weight.shape)}")
    return partial(fn, cols=torch.tensor(rule.cols, dtype=torch.float32, device=weight.device))


def set_qat(model: torch.nn.Module, rules: Iterable[Sequence], enabled: bool, reset: bool = True,
            noise: float = 0.0) -> list[str]:
    """Install (or remove) fake quantizers; returns the names of quantized weights. ``noise``
    0: round to the grid (straight-through); ``w > 0``: uniform noise ``w`` grid steps wide
    instead (``noise_quantize``).

    ``reset=False`` keeps torch.compile's caches: only safe once :func:`switch_is_visible`
    has shown that the compiled model notices the switch."""
    parsed = parse_rules(rules)
    params = dict(model.named_parameters(remove_duplicate=False))
    done = []
    for name, owner, attr in _targets(model):
        fn = None
        i = first_match(name, ([r.pattern] for r in parsed)) if enabled else None
        if i is not None and parsed[i].bits > 0:
            fn = _rule_quantizer(parsed[i], params[name], noise)
            done.append(name)
        setattr(owner, attr, fn)
    if reset and hasattr(torch, "_dynamo"):
        torch._dynamo.reset()  # force a re-trace: never let a compiled graph keep the old forward
    return done


def switch_is_visible(forward: Callable[[], torch.Tensor], model: torch.nn.Module, rules: Iterable[Sequence]) -> bool:
    """With QAT on, compare ``forward()`` before and after switching QAT off without a reset.
    Equal outputs mean the compiled graph ignored the switch (the constant-folding failure).
    Both forwards draw the same random numbers (outside training's random stream), so QAT's
    noise cannot pass for a difference. Gradients stay enabled so the probe runs the very
    graphs training uses (no backward is taken). Leaves QAT off."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []

    def seeded() -> torch.Tensor:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(0)
            return forward().detach().clone()

    on = seeded()
    set_qat(model, rules, False, reset=False)
    return not torch.equal(on, seeded())


def fake_quantize(w: torch.Tensor, bits: int, rule: ClipRule, cols: torch.Tensor | None = None) -> torch.Tensor:
    """Quantize-dequantize in the forward pass, identity gradient (straight-through); ``cols``:
    column scales (the grid codes ``w / cols``)."""
    with torch.no_grad():
        scaled = w if cols is None else as_rows(w) / cols[None, :]
        q, scales = quantize_rtn(scaled, bits, rule)
        dq = dequantize(q, scales, tuple(w.shape), w.dtype, cols)
    return w + (dq - w).detach()


def noise_quantize(w: torch.Tensor, bits: int, rule: ClipRule, width: float,
                   cols: torch.Tensor | None = None) -> torch.Tensor:
    """Pseudo-quantization noise (DiffQ, Defossez et al. 2021): ``w`` plus uniform noise ``width``
    grid steps wide, identity gradient. The forward pass sees an error of the grid's scale while
    the weights never snap to it, so a weight near a rounding boundary does not flip between
    two grid points from step to step. ``cols``: column scales (each step is its row's times
    its column's)."""
    with torch.no_grad():
        rows = as_rows(w)
        if cols is None:
            step = row_scales(rows, bits, rule).float()[:, None]
        else:
            step = row_scales(rows / cols[None, :], bits, rule).float()[:, None] * cols[None, :]
        noise = (torch.rand_like(rows) - 0.5).mul_(step * width)
    return w + noise.reshape(w.shape).to(w.dtype)
