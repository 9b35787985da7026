"""``golfpack bench qat``: what quantization-aware training buys at a budget that binds.

For each model size, the same data, seed and number of steps are trained three ways:

* ``none``: no QAT;
* ``rules``: QAT toward the default pipeline's written grids (int6 matrices, int7 embedding,
  clip sdcap:12.85), from ``qat_start`` of training on (golfpack's QAT before budgets);
* ``budget``: budget-aware QAT (``trainer/qat.py``, ``codec/qat_plan.py``): from ``qat_start``
  on, toward the grids the loss-aware allocator plans for the bench's budget on the weights of
  that moment (planned again ``refresh`` times), as noise ``noise`` grid steps wide (0: rounding);
  one run per budget, since the plan depends on it.

Every checkpoint is built with the default pipeline (``fill``: bits, clip and corrections per
matrix, the closed loop on held-out training tokens) at budgets of ``bits`` per parameter
(the weights container gets ``bits * params / 8`` bytes; the artifact that much plus its code
and structure), and each artifact's own evaluation (``golfpack run``) scores it on the whole
validation file. Each run's float model is scored on the same tokens, so the table shows both
the artifacts' val_bpb and what the export cost each run. Training times are the trainer's own
clock (plans included) on this machine, in one run: compare them as ratios.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Callable

from ...codec.qat_plan import grid_planner
from ...codec.spec import load_spec, quantizer_rules
from ...trainer.roles import tensor_roles
from ...model.builders import build_model
from ...model.checkpoint import load_checkpoint
from ...model.evaluate import evaluate_files
from ...model.scoring import EvalSettings
from ...trainer.config import TrainConfig, load_config
from ...trainer.train import train
from ..build import BuildOptions, build, model_frame_size
from ..run import run_artifact

SIZES = {"small": {"num_layers": 2, "model_dim": 128}, "medium": {"num_layers": 4, "model_dim": 256}}
PLAN_TIME = re.compile(r"^qat:plan .* plan_time:(\d+)ms$", re.M)
STEP_TIME = re.compile(r"^step:(\d+)/\d+ train_loss:\S+ train_time:(\d+)ms", re.M)


@dataclass(frozen=True, kw_only=True)
class QatBenchOptions:
    train: str  # training shard glob
    val: str  # validation shard glob: every run and artifact is scored on all of it
    tokenizer: str
    out: Path  # runs and artifacts go under it
    steps: int = 300
    sizes: tuple[str, ...] = ("small", "medium")
    bits: tuple[float, ...] = (3.5, 2.5)
    qat_start: float = 0.7
    refresh: int = 1
    noise: float = 1.0  # budget-aware QAT's forward: uniform noise this many grid steps wide (0: rounding)
    seq_len: int = 1024  # evaluation window
    force: bool = False
    reuse: bool = False  # a run whose final checkpoint exists under ``out`` is built again, not retrained


@dataclass
class QatRun:
    """One trained model: its variant (``bits``: the budget it planned for, budget-aware only)."""

    size: str
    variant: str
    bits: float | None
    params: int
    steps: int
    train_ms: float
    plan_ms: float
    pace_ms: float  # ms per step before ``qat_start`` of this run: its own no-QAT pace
    float_bpb: float
    artifacts: dict[float, tuple[int, float]] = field(default_factory=dict)  # bits/param -> (bytes, val_bpb)


def base_config(opts: QatBenchOptions, size: str, out_dir: Path) -> TrainConfig:
    """The CPU preset (the demo's), by steps instead of the clock, at ``size``."""
    dims = [f"model.{k}={v}" for k, v in SIZES[size].items()]
    return load_config(str(files("golfpack.trainer").joinpath("cpu_small.toml")),
                       [f"train_files={opts.train}", f"val_files={opts.val}", f"tokenizer={opts.tokenizer}",
                        f"out_dir={out_dir}", f"iterations={opts.steps}", "max_wallclock_seconds=0",
                        f"warmdown_iters={max(round(0.45 * opts.steps), 1)}", "val_max_tokens=65536", *dims])


def quiet(echo: Callable[[str], None]) -> Callable[[str], None]:
    """A training log shown only by its QAT and save lines."""
    def show(line: str) -> None:
        if line.startswith(("qat:", "saved:")):
            echo(f"  {line}")

    return show


def qat_bench(opts: QatBenchOptions, echo: Callable[[str], None] = print) -> list[QatRun]:
    if not 0 < opts.qat_start < 1:
        raise ValueError(f"--qat-start must be between 0 and 1, got {opts.qat_start}")
    unknown = [s for s in opts.sizes if s not in SIZES]
    if unknown:
        raise ValueError(f"unknown size {unknown[0]!r} (sizes: {', '.join(SIZES)})")
    runs = []
    for size in opts.sizes:
        probe = base_config(opts, size, opts.out)
        model = build_model(probe.model_builder, probe.model)
        params = sum(t.numel() for t in model.state_dict().values())
        frame = model_frame_size(load_spec("default"), model, probe.model_builder, probe.to_dict())
        weights = {b: round(b * params / 8) for b in opts.bits}
        plans = [("none", None), ("rules", None), *(("budget", b) for b in opts.bits)]
        for variant, bits in plans:
            name = variant if bits is None else f"budget-{bits:g}"
            cfg = base_config(opts, size, opts.out / size / name)
            if variant != "none":
                cfg.qat_start_frac = opts.qat_start
            if variant == "rules":
                cfg.qat_rules = quantizer_rules(load_spec("default"), tensor_roles(model))
            if variant == "budget":
                cfg.qat_budget, cfg.qat_refresh, cfg.qat_noise = weights[bits], opts.refresh, opts.noise
            final = Path(cfg.out_dir) / "final.pt"
            if opts.reuse and final.is_file():
                echo(f"[{size} {name}] reusing {final}")
            else:
                echo(f"[{size} {name}] training {opts.steps} steps ({params:,} params)")
                train(cfg, force=opts.force, echo=quiet(echo), planner=grid_planner)
            ckpt = load_checkpoint(final, cfg.model_builder)
            log = (Path(cfg.out_dir) / "train.log").read_text(encoding="utf-8").rsplit("\nmodel_params:", 1)[-1]
            plan_ms = sum(float(m[1]) for m in PLAN_TIME.finditer(log))  # this run's plans (a log is appended to)
            pace_ms = own_pace(log, opts.qat_start * opts.steps)
            float_bpb = evaluate_files(ckpt.build_model(), opts.val, opts.tokenizer,
                                       EvalSettings(opts.seq_len), progress=False).val_bpb
            run = QatRun(size, variant, bits, params, int(ckpt.meta["step"]), float(ckpt.meta["train_time_ms"]),
                         plan_ms, pace_ms, float_bpb)
            for b in opts.bits if bits is None else (bits,):
                artifact = opts.out / size / f"{name}.{b:g}bpp.pyz"
                build(final, "default", artifact,
                      BuildOptions(budget=frame + weights[b], force=opts.force or opts.reuse), echo=lambda _: None,
                      progress=False)
                r = run_artifact(artifact, opts.val, opts.tokenizer, EvalSettings(opts.seq_len))
                run.artifacts[b] = (r.artifact_bytes, r.val_bpb)
                echo(f"  {b:g} bits/param: {r.artifact_bytes:,} bytes, val_bpb {r.val_bpb:.5f} "
                     f"(float {float_bpb:.5f})")
            runs.append(run)
    return runs


def own_pace(log: str, before: float) -> float:
    """Milliseconds per step up to the last logged step at or before step ``before`` (QAT not on
    yet): the pace this run would have kept without QAT, on this machine as loaded then."""
    steps = [(int(m[1]), float(m[2])) for m in STEP_TIME.finditer(log) if 0 < int(m[1]) <= before]
    if not steps:
        raise ValueError(f"the training log has no step line before step {before:g}: log more often (train_log_every)")
    step, ms = steps[-1]
    return ms / step


def format_qat(runs: list[QatRun]) -> str:
    """The table, then per size and budget what budget-aware QAT recovered of the export's cost
    (a negative improvement is a loss)."""
    lines = [f"{'size':<7} {'variant':<11} {'train s':>8} {'x none':>7} {'x own':>6} {'plans s':>8} "
             f"{'float bpb':>10} {'b/param':>7} {'bytes':>10} {'val_bpb':>9} {'export +':>9}"]
    for r in runs:
        none = next(n for n in runs if n.size == r.size and n.variant == "none")
        name = r.variant if r.bits is None else f"budget-{r.bits:g}"
        own = r.train_ms / (r.pace_ms * r.steps)  # against its own pace before QAT: a load steady through the run cancels
        for b, (size, bpb) in sorted(r.artifacts.items(), reverse=True):
            lines.append(f"{r.size:<7} {name:<11} {r.train_ms / 1000:>8.1f} {r.train_ms / none.train_ms:>7.3f} "
                         f"{own:>6.3f} {r.plan_ms / 1000:>8.1f} {r.float_bpb:>10.5f} {b:>7g} {size:>10,} {bpb:>9.5f} "
                         f"{bpb - r.float_bpb:>+9.5f}")
    for size in dict.fromkeys(r.size for r in runs):
        none = next(r for r in runs if r.size == size and r.variant == "none")
        rules = next((r for r in runs if r.size == size and r.variant == "rules"), None)
        for b in sorted(none.artifacts, reverse=True):
            budget = next((r for r in runs if r.size == size and r.variant == "budget" and r.bits == b), None)
            if budget is None:
                continue
            cost = none.artifacts[b][1] - none.float_bpb
            gain = none.artifacts[b][1] - budget.artifacts[b][1]
            vs_rules = f"; on rules' by {rules.artifacts[b][1] - budget.artifacts[b][1]:+.5f}" if rules else ""
            lines.append(f"{size} at {b:g} bits/param: budget-aware QAT's artifact improves on no-QAT's by "
                         f"{gain:+.5f} bpb, {gain / cost if cost > 0 else float('nan'):+.2f} of the export's cost "
                         f"({cost:.5f}){vs_rules}")
    return "\n".join(lines)
