"""The training loop: the challenge's recipe (Muon + Adam, wall-clock cap, warmdown), with
DDP on any world size, EMA, QAT switched on part-way, exact resume and GPTQ calibration.

Read it top to bottom: :class:`Run` holds everything one run owns and :meth:`Run.train` calls
its phases in order: ``prime_compile`` (CUDA only), ``loop`` (each ``step``; ``validate`` on
schedule; the QAT switch), then ``finish`` (rank check, EMA, save, calibration).
"""
from __future__ import annotations

import contextlib
import copy
import glob
import json
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from ..model.checkpoint import QAT_PLAN_KEY, TOKENS_SEEN_KEY, Checkpoint, load_checkpoint, save_checkpoint
from ..model.distributed import DistContext, init_from_env, share_text
from ..model.files import append_line, check_appendable
from ..model.console import one_line, progress_bar
from ..model.anatomy import Kind, parameter_kinds
from ..model.builders import build_model, model_meta
from ..model.gpt import CastedLinear, restore_low_dim_params_to_fp32
from ..model.scoring import EvalResult, evaluate, truncate_for_eval
from ..model.shards import load_tokens, resolve_shards, stream_position
from ..model.tokenizer import byte_tables_for
from ..codec.decoders.config import EMBEDDING
from .calibrate import Batch
from .calibration_files import (CLOSED_LOOP_ON, calib_path, collect_hessians, collect_sensitivity, save_hessians,
                                scoring_batches, sens_path)
from .config import TrainConfig
from .data import DistributedTokenLoader
from .log_line import STEP_VAL
from .muon import Muon
from .qat import GridPlanner, PlannerFactory, load_planner, parse_rules, plan_rules, set_qat, switch_is_visible
from .resume import ResumeError, ResumeState, read_resume
from .roles import tensor_roles
from .schedule import lr_multiplier, progress_fraction

T = TypeVar("T")
STEP_NAME = "step_{:06d}.pt"  # --save-every's resumable checkpoints in the run folder
STEP_FILE = re.compile(r"step_([0-9]+)\.pt")


@dataclass
class TrainResult:
    checkpoint: Path
    steps: int
    train_time_ms: float
    tokens_per_second: float
    val: EvalResult | None
    calib: Path | None
    ctx: DistContext  # the process group the run used (still up: shutdown() ends it)
    score: list[Batch] = field(default_factory=list)  # keep_score: the closed loop's held-out tokens, read in the clock


class Logger:
    def __init__(self, ctx: DistContext, logfile: Path | None, echo: Callable[[str], None]):
        self.ctx, self.logfile, self.echo = ctx, logfile, echo
        if ctx.is_main and logfile is not None:
            check_appendable(logfile)  # before any work, not at the first line

    def __call__(self, msg: str, console: bool = True) -> None:
        if not self.ctx.is_main:
            return
        if console:
            self.echo(msg)
        if self.logfile is not None:
            append_line(self.logfile, msg)


def build_optimizers(model: torch.nn.Module, cfg: TrainConfig) -> tuple[list[torch.optim.Optimizer], Muon]:
    """The challenge's split, by each parameter's kind (``model.anatomy.parameter_kinds``):
    Muon for matrices, Adam for the embedding (the tied learning rate when there is no separate
    head), the head, and the control tensors. For the baseline GPT this is the challenge's
    grouping exactly."""
    kinds = parameter_kinds(model)
    params = {k: [p for n, p in model.named_parameters() if kinds[n] is k and p.numel()] for k in Kind}
    fused = next(model.parameters()).is_cuda
    adam = lambda params, lr: torch.optim.Adam(  # noqa: E731
        [{"params": params, "lr": lr, "base_lr": lr}], betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps, fused=fused)
    token_lr = cfg.embed_lr if params[Kind.HEAD] else cfg.tied_embed_lr
    muon = Muon(params[Kind.HIDDEN], lr=cfg.matrix_lr, momentum=cfg.muon_momentum, backend_steps=cfg.muon_backend_steps,
                weight_decay=cfg.weight_decay)
    for group in muon.param_groups:
        group["base_lr"] = cfg.matrix_lr
    optimizers = [adam(params[Kind.EMBEDDING], token_lr), muon, adam(params[Kind.CONTROL], cfg.scalar_lr)]
    if params[Kind.HEAD]:
        optimizers.insert(1, adam(params[Kind.HEAD], cfg.head_lr))
    return optimizers, muon


def check_ranks_in_sync(model: torch.nn.Module) -> None:
    """Every rank must hold bit-identical weights after DDP training; fail loudly otherwise."""
    flat = torch.cat([p.detach().float().reshape(-1) for p in model.parameters()])
    digest = torch.tensor([float(flat.double().sum()), float((flat.double() ** 2).sum())], dtype=torch.float64,
                          device=flat.device)
    gathered = [torch.zeros_like(digest) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, digest)
    if any(not torch.equal(g, gathered[0]) for g in gathered):
        raise RuntimeError(f"ranks diverged: weight checksums {[g.tolist() for g in gathered]}")


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def train(cfg: TrainConfig, resume: str | Path | None = None, force: bool = False,
          echo: Callable[[str], None] = print, save_every: int = 0, planner: PlannerFactory | None = None,
          keep_score: bool = False) -> TrainResult:
    """``planner``: budget-aware QAT's grid planner factory (default: golfpack's, imported when
    ``cfg.qat_budget`` is set). ``keep_score``: calibration also reads the fill's closed-loop
    tokens (``cfg.score_tokens``) and returns them, so a script that encodes right after
    training reads no training data after the clock (the records script)."""
    return Run(cfg, resume, force, echo, save_every, planner, keep_score).train()


class Run:
    """One training run: its process group, data, model, optimizers, clock and log."""

    def __init__(self, cfg: TrainConfig, resume: str | Path | None, force: bool, echo: Callable[[str], None],
                 save_every: int, planner: PlannerFactory | None = None, keep_score: bool = False) -> None:
        self.cfg, self.save_every, self.force, self.keep_score = cfg, save_every, force, keep_score
        if cfg.qat_budget > 0 and not cfg.qat_start_frac < 1:
            raise ValueError(f"qat_budget={cfg.qat_budget} needs QAT to switch on: set qat_start_frac below 1")
        if not 0 <= cfg.qat_noise <= 1:
            raise ValueError(f"qat_noise={cfg.qat_noise} must be between 0 (round to the grid) and 1 grid step")
        self.ctx = ctx = init_from_env(None if cfg.device == "auto" else cfg.device)
        self.cuda = ctx.device.type == "cuda"
        self.out = Path(cfg.out_dir)
        self.final_path = self.out / "final.pt"
        if ctx.is_main and not force:  # before any work: resumed or not, a run replaces nothing without --force
            for mine in (self.final_path, calib_path(self.final_path), sens_path(self.final_path)):
                if mine.exists():
                    raise FileExistsError(f"{mine} exists (use --force to overwrite)")
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = Logger(ctx, Path(cfg.log_file) if cfg.log_file else self.out / "train.log", echo)
        self.world = ctx.world_size
        if not cfg.grad_accum_steps and 8 % self.world:  # the challenge's script refuses it too
            raise ValueError(f"world size {self.world} does not divide 8, the challenge's accumulation over 8 "
                             "micro-batches: run 1, 2, 4 or 8 processes, or set grad_accum_steps")
        self.grad_accum = cfg.grad_accum_steps or 8 // self.world
        if cfg.train_batch_tokens % (self.world * self.grad_accum * cfg.train_seq_len):
            raise ValueError(f"train_batch_tokens={cfg.train_batch_tokens} must be a multiple of world_size*"
                             f"grad_accum_steps*train_seq_len={self.world * self.grad_accum * cfg.train_seq_len}")
        self.wallclock_s = cfg.max_wallclock_seconds if cfg.max_wallclock_seconds >= 0 else (600.0 if self.cuda else 0.0)
        if self.wallclock_s > 0 and cfg.calib_tokens > 0 and cfg.calib_reserve_seconds > 0:
            # GPTQ calibration reads training data after the loop: the rules count it as training,
            # so the loop stops early enough for it to fit inside the cap (as the records do)
            self.wallclock_s = max(self.wallclock_s - cfg.calib_reserve_seconds, 1e-3)
        # a resume state is read (every field, and its stream position against the shards' headers)
        # before the data and the model are built: a crafted one costs nothing
        state = self._read_resume(resume) if resume is not None else None
        _seed(cfg.seed)
        self._build_data()
        self._build_model()
        self.step, self.train_ms, self.qat_on, self.qat_primed = 0, 0.0, False, False
        self.qat_rules = parse_rules(cfg.qat_rules)  # the grids QAT trains toward; a budget plan replaces them
        self.planner = self._planner(planner) if cfg.qat_budget > 0 else None
        # budget-aware QAT with qat_embedding off plans the embedding's bytes but trains it float
        # (a bits-0 rule, matched first, leaves a weight alone)
        floats = [] if self.planner is None or cfg.qat_embedding else \
            [n for n, role in tensor_roles(self.base).items() if role == EMBEDDING]
        self.float_rules = parse_rules([(glob.escape(n), 0, "absmax") for n in floats])
        self.plans = 0  # budget plans made so far
        self.t0 = time.perf_counter()
        self.resumed = state is not None
        if state is not None:
            self._restore(resume, *state)
        if ctx.is_main and save_every and not force:  # a step checkpoint this run would write
            later = [p for p in self.out.iterdir() if (m := STEP_FILE.fullmatch(p.name)) and int(m[1]) > self.step]
            if later:
                raise FileExistsError(f"{min(later)} exists (use --force to overwrite)")

    # -- setup ------------------------------------------------------------------------------
    def _build_data(self) -> None:
        cfg = self.cfg
        self.tables = byte_tables_for(cfg.tokenizer, cfg.vocab_size)
        val_tokens = load_tokens(cfg.val_files, cfg.vocab_size)
        if cfg.val_max_tokens:
            val_tokens = val_tokens[: cfg.val_max_tokens + 1]
        self.val_tokens = truncate_for_eval(val_tokens, cfg.train_seq_len)
        self.loader = DistributedTokenLoader(cfg.train_files, self.ctx.rank, self.world, self.ctx.device,
                                             cfg.vocab_size, val=cfg.val_files)

    def _build_model(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        base = build_model(cfg.model_builder, cfg.model).to(ctx.device)
        if self.cuda:
            base = base.bfloat16()
            for m in base.modules():
                if isinstance(m, CastedLinear):
                    m.float()
            restore_low_dim_params_to_fp32(base)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        compiled = torch.compile(base, dynamic=False) if self.cuda and cfg.compile else base
        self.base = base
        self.model = DDP(compiled, device_ids=[ctx.local_rank] if self.cuda else None,
                         broadcast_buffers=False) if self.world > 1 else compiled
        self.optimizers, self.muon = build_optimizers(base, cfg)
        self.ema = {k: v.detach().float().clone() for k, v in base.state_dict().items()} if cfg.ema_decay > 0 else None

    def _planner(self, factory: PlannerFactory | None) -> GridPlanner:
        cfg = self.cfg
        factory = factory or load_planner()
        return factory(cfg.qat_pipeline, cfg.qat_budget, tensor_roles(self.base),
                       model_meta(cfg.model_builder, cfg.model))

    def _read_resume(self, resume: str | Path) -> tuple[ResumeState, bool]:
        """The checkpoint's resume state, and whether it carries its own QAT rules."""
        ck = load_checkpoint(resume, self.cfg.model_builder)
        if not ck.resume:
            raise ValueError(f"{resume}: checkpoint has no resume state")
        try:
            state = read_resume(ck.resume)
            stream_position(resolve_shards(self.cfg.train_files), state.data)
        except ValueError as e:
            raise ResumeError(f"{resume}: cannot continue from its resume state ({one_line(e)[:300]})") from None
        return state, "qat_rules" in ck.resume

    def _restore(self, resume: str | Path, state: ResumeState, own_rules: bool) -> None:
        try:
            model = self.base.state_dict()
            if state.ema is not None and {k: v.shape for k, v in state.ema.items()} != \
                    {k: v.shape for k, v in model.items()}:
                raise ResumeError("resume state: its ema does not match the model")
            self.base.load_state_dict(state.model)
            if len(state.optimizers) != len(self.optimizers):
                raise ResumeError(f"resume state: {len(state.optimizers)} optimizer states for {len(self.optimizers)}")
            for opt, opt_state in zip(self.optimizers, state.optimizers):
                opt.load_state_dict(opt_state)
            self.loader.stream.restore(state.data)
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:  # torch's own checks, one line
            raise ResumeError(f"{resume}: cannot continue from its resume state ({one_line(e)[:300]})") from None
        self.step, self.train_ms, self.qat_on = state.step, state.train_ms, state.qat_on
        self.qat_rules = state.qat_rules if own_rules else parse_rules(self.cfg.qat_rules)
        self.plans = state.qat_plans
        self.ema = state.ema or self.ema
        if self.qat_on:
            self.quantize(True)
        self.log(f"resume:{resume} step:{self.step} train_time:{self.train_ms:.0f}ms qat:{self.qat_on}")

    # -- the run ----------------------------------------------------------------------------
    def train(self) -> TrainResult:
        cfg = self.cfg
        n_params = sum(p.numel() for p in self.base.parameters())
        self.log(f"config:{json.dumps(cfg.to_dict(), sort_keys=True)}", console=False)
        self.log(f"model_params:{n_params} world_size:{self.world} grad_accum_steps:{self.grad_accum} "
                 f"device:{self.ctx.device}")
        self.log(f"train_batch_tokens:{cfg.train_batch_tokens} train_seq_len:{cfg.train_seq_len} "
                 f"iterations:{cfg.iterations} max_wallclock_seconds:{self.wallclock_s:.3f} "
                 f"val_tokens:{self.val_tokens.numel() - 1}")
        if self.cuda and cfg.compile and cfg.compile_warmup_steps > 0 and not self.resumed:
            self.prime_compile()
        val = self.loop()
        return self.finish(val)

    def prime_compile(self) -> None:
        """Prime the compiled paths, then restore the true initial state (the challenge's warmup).
        If QAT will switch on later, the second half of the warmup primes the QAT graphs too,
        and a probe proves the compiled model sees the switch before it is trusted to."""
        cfg = self.cfg
        qat_later = bool(self.qat_rules) and cfg.qat_start_frac < 1 and self.planner is None  # a plan re-traces
        init_model = {k: v.detach().clone() for k, v in self.base.state_dict().items()}
        init_opt = [copy.deepcopy(o.state_dict()) for o in self.optimizers]
        data_state = self.loader.stream.state()
        for i in range(cfg.compile_warmup_steps):
            if qat_later and i == cfg.compile_warmup_steps // 2:
                self.quantize(True, reset=False)
            self.zero_grad()
            self.forward_backward()
            for opt in self.optimizers:
                opt.step()
        if qat_later:
            probe = self.loader.next_batch(cfg.train_batch_tokens, cfg.train_seq_len, self.grad_accum)

            def probe_forward() -> torch.Tensor:
                with (self.model.no_sync() if self.world > 1 else contextlib.nullcontext()), \
                        torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                    return self.model(*probe)

            self.qat_primed = switch_is_visible(probe_forward, self.base, self.qat_rules)
            self.log(f"qat:compiled_switch_{'verified' if self.qat_primed else 'not_seen (will re-trace at the switch)'}")
        self.base.load_state_dict(init_model)
        for o, s in zip(self.optimizers, init_opt):
            o.load_state_dict(s)
        self.loader.stream.restore(data_state)
        self.zero_grad()
        self.log(f"compile_warmup_steps:{cfg.compile_warmup_steps} done")

    def loop(self) -> EvalResult | None:
        """Steps until the iteration count or the wall-clock cap; returns the last validation."""
        cfg = self.cfg
        by_clock = self.max_wallclock_ms is not None  # the bar follows whatever ends the run first
        bar = progress_bar(self.ctx.is_main, total=round(self.wallclock_s) if by_clock else cfg.iterations,
                           initial=round(self.train_ms / 1000) if by_clock else self.step, desc="train",
                           unit="s" if by_clock else "step", file=sys.stderr)
        stop_after: int | None = None
        val: EvalResult | None = None
        self.sync()
        self.t0 = time.perf_counter()
        while True:
            elapsed = self.shared_clock_ms()
            if stop_after is None and self.max_wallclock_ms is not None and elapsed >= self.max_wallclock_ms \
                    and self.step > 0:
                stop_after = self.step
            last = self.step == cfg.iterations or (stop_after is not None and self.step >= stop_after)
            if last or (cfg.val_loss_every > 0 and self.step % cfg.val_loss_every == 0 and self.step > 0):
                val = self.timed_out(self.validate)
                self.log(STEP_VAL.format(step=self.step, iterations=cfg.iterations, val_loss=val.val_loss,
                                         val_bpb=val.val_bpb, train_ms=self.train_ms,
                                         step_avg_ms=self.train_ms / max(self.step, 1)))
            if last:
                if stop_after is not None and self.step < cfg.iterations:
                    self.log(f"stopping_early: wallclock_cap train_time:{self.train_ms:.0f}ms "
                             f"step:{self.step}/{cfg.iterations}")
                break
            self.maybe_switch_qat(elapsed)
            train_loss = self.train_step(elapsed)
            approx_ms = self.clock_ms()
            bar.update(min(round(approx_ms / 1000), bar.total) - bar.n if by_clock else 1)
            bar.set_postfix_str(f"step {self.step}", refresh=False)  # no .item(): it would sync CUDA every step
            self.log_train_loss(train_loss, approx_ms)
            if self.save_every and self.step % self.save_every == 0:
                self.timed_out(lambda: self.save(self.out / STEP_NAME.format(self.step), self.base.state_dict()))
        bar.close()
        return val

    def finish(self, val: EvalResult | None) -> TrainResult:
        """Check the ranks agree, export (EMA weights if on), save, and calibrate GPTQ."""
        cfg = self.cfg
        if self.world > 1:
            check_ranks_in_sync(self.base)
            self.log("ranks_in_sync:true")
        exported = self.ema if self.ema is not None else self.base.state_dict()
        if self.ema is not None:
            self.base.load_state_dict({k: v.to(self.base.state_dict()[k].dtype) for k, v in self.ema.items()})
            val = self.validate()
            self.log(f"ema val_loss:{val.val_loss:.4f} val_bpb:{val.val_bpb:.4f}")
        self.save(self.final_path, exported)
        tokens_per_s = self.tokens_seen / max(self.train_ms / 1000.0, 1e-9)
        self.log(f"saved:{self.final_path} steps:{self.step} train_time:{self.train_ms:.0f}ms "
                 f"tokens_per_s:{tokens_per_s:.0f} tokens_per_s_per_rank:{tokens_per_s / self.world:.0f}")
        if self.cuda:
            self.log(f"peak memory allocated: {torch.cuda.max_memory_allocated() // 2**20} MiB")
        calib, score = None, []
        if cfg.calib_tokens > 0 and self.ctx.is_main:
            if self.qat_on:
                self.quantize(False)
            t0 = time.perf_counter()
            hessians = collect_hessians(self.base, cfg.train_files, cfg.calib_tokens, cfg.train_seq_len,
                                        device=self.ctx.device)
            sens = collect_sensitivity(self.base, cfg.train_files, cfg.sens_tokens, cfg.train_seq_len,
                                       skip=cfg.calib_tokens, device=self.ctx.device) if cfg.sens_tokens else None
            if self.keep_score and cfg.score_tokens:  # the closed loop's tokens: training data, so read in the clock
                score, what = scoring_batches(cfg.train_files, getattr(self.base, "vocab_size", None),
                                              cfg.calib_tokens + cfg.sens_tokens, cfg.score_tokens, cfg.train_seq_len,
                                              self.tokens_seen)
                self.log(CLOSED_LOOP_ON.format(what))
            self.sync()
            calib_ms = 1000.0 * (time.perf_counter() - t0)
            calib = calib_path(self.final_path)
            save_hessians(calib, hessians, overwrite=self.force)
            if sens is not None:
                save_hessians(sens_path(self.final_path), sens, overwrite=self.force)
            self.log(f"calibration:{calib} tokens:{cfg.calib_tokens} hessians:{len(hessians)} "
                     f"sensitivity_tokens:{cfg.sens_tokens if sens is not None else 0} "
                     f"score_tokens:{sum(x.numel() for x, _ in score)} calib_time:{calib_ms:.0f}ms "
                     f"train_plus_calib_time:{self.train_ms + calib_ms:.0f}ms")
        if self.world > 1:
            dist.barrier()
        return TrainResult(self.final_path, self.step, self.train_ms, tokens_per_s, val, calib, self.ctx, score)

    @property
    def tokens_seen(self) -> int:
        """The training stream's prefix the run has read (the checkpoint's ``tokens_seen``)."""
        return self.step * self.cfg.train_batch_tokens

    # -- one step ---------------------------------------------------------------------------
    def zero_grad(self) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)

    def forward_backward(self) -> torch.Tensor:
        """Gradients of one global batch (accumulated over micro-batches); its mean loss."""
        cfg = self.cfg
        total = torch.zeros((), device=self.ctx.device)
        for micro in range(self.grad_accum):
            if self.world > 1:
                self.model.require_backward_grad_sync = micro == self.grad_accum - 1
            x, y = self.loader.next_batch(cfg.train_batch_tokens, cfg.train_seq_len, self.grad_accum)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=self.cuda):
                loss = self.model(x, y)
            total += loss.detach()
            (loss / self.grad_accum).backward()
        return total / self.grad_accum

    def train_step(self, elapsed_ms: float) -> torch.Tensor:
        cfg = self.cfg
        scale = lr_multiplier(self.step, elapsed_ms, cfg.iterations, cfg.lr_warmup_steps, cfg.warmdown_iters,
                              self.max_wallclock_ms)
        self.zero_grad()
        train_loss = self.forward_backward()
        frac = min(self.step / cfg.muon_momentum_warmup_steps, 1.0) if cfg.muon_momentum_warmup_steps > 0 else 1.0
        for group in self.muon.param_groups:
            group["momentum"] = (1 - frac) * cfg.muon_momentum_warmup_start + frac * cfg.muon_momentum
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * scale
        if cfg.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.base.parameters(), cfg.grad_clip_norm)
        for opt in self.optimizers:
            opt.step()
        self.zero_grad()
        if self.ema is not None:
            with torch.no_grad():
                for k, v in self.base.state_dict().items():
                    self.ema[k].mul_(cfg.ema_decay).add_(v.float(), alpha=1 - cfg.ema_decay)
        self.step += 1
        return train_loss

    def quantize(self, enabled: bool, reset: bool = True) -> list[str]:
        """QAT's quantizers for ``qat_rules`` on (or off), none on ``float_rules``' weights: see
        ``qat.set_qat``."""
        return set_qat(self.base, self.float_rules + self.qat_rules, enabled, reset, noise=self.cfg.qat_noise)

    def maybe_switch_qat(self, elapsed_ms: float) -> None:
        """QAT on at ``qat_start_frac`` of training; with a budget, each plan (the first at the
        switch, then ``qat_refresh`` more, evenly spaced) replaces the grids. A plan always
        resets torch.compile's caches: its grids are not the ones the warm-up primed."""
        cfg = self.cfg
        done = self.plans > cfg.qat_refresh if self.planner is not None else self.qat_on or not self.qat_rules
        if done:  # nothing (left) to switch: checked before the clock, on every step
            return
        due = cfg.qat_start_frac + (1 - cfg.qat_start_frac) * self.plans / (cfg.qat_refresh + 1)  # the switch first
        if progress_fraction(self.step, elapsed_ms, cfg.iterations, self.max_wallclock_ms) < due:
            return
        if self.planner is not None:
            self.plan_grids()
        switched, self.qat_on = not self.qat_on, True
        names = self.quantize(True, reset=self.planner is not None or not self.qat_primed)
        if switched:
            self.log(f"qat:on step:{self.step} train_time:{elapsed_ms:.0f}ms quantized_weights:{len(names)}"
                     + (" graph:primed" if self.qat_primed else ""))

    def plan_grids(self) -> None:
        """Budget-aware QAT's plan: rank 0 calibrates on training tokens (QAT off), the planner
        allocates ``qat_budget`` on the current weights, and every rank takes rank 0's grids.
        The time counts as training time, and is logged."""
        cfg = self.cfg
        t0 = time.perf_counter()
        text = None
        if self.ctx.is_main:
            if self.qat_on:
                self.quantize(False, reset=False)
            n, seq = cfg.qat_calib_tokens, cfg.train_seq_len
            hessians = collect_hessians(self.base, cfg.train_files, n, seq, device=self.ctx.device, progress=False)
            sens = collect_sensitivity(self.base, cfg.train_files, n, seq, skip=n, device=self.ctx.device,
                                       progress=False)
            plan = self.planner({k: v.detach().float().cpu() for k, v in self.base.state_dict().items()}, hessians,
                                sens)
            line = f"budget:{plan.budget} predicted_bytes:{plan.predicted_bytes} {plan.summary()}"
            text = json.dumps({"rules": [r.to_json() for r in plan_rules(plan)], "line": line})
        shared = json.loads(share_text(self.ctx, text))
        self.qat_rules = parse_rules(shared["rules"])
        self.plans += 1
        self.sync()
        self.log(f"qat:plan {self.plans}/{cfg.qat_refresh + 1} step:{self.step} {shared['line']} "
                 f"plan_time:{1000.0 * (time.perf_counter() - t0):.0f}ms")

    def log_train_loss(self, train_loss: torch.Tensor, approx_ms: float) -> None:
        cfg, step = self.cfg, self.step
        if cfg.train_log_every <= 0 or not (step <= 10 or step % cfg.train_log_every == 0 or
                                            (self.max_wallclock_ms is not None and approx_ms >= self.max_wallclock_ms)):
            return
        if self.world > 1:  # log the global mean (gloo has no AVG)
            dist.all_reduce(train_loss, op=dist.ReduceOp.SUM)
            train_loss /= self.world
        self.log(f"step:{step}/{cfg.iterations} train_loss:{train_loss.item():.4f} "
                 f"train_time:{approx_ms:.0f}ms step_avg:{approx_ms / step:.2f}ms")

    # -- clock, evaluation, saving ------------------------------------------------------------
    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    @property
    def max_wallclock_ms(self) -> float | None:
        return 1000.0 * self.wallclock_s if self.wallclock_s > 0 else None

    def clock_ms(self) -> float:
        """This rank's training time so far: the banked time plus the running segment."""
        return self.train_ms + 1000.0 * (time.perf_counter() - self.t0)

    def timed_out(self, work: Callable[[], T]) -> T:
        """Run ``work`` with the training clock stopped (validation and saving are not training)."""
        self.sync()
        self.train_ms = self.clock_ms()
        result = work()
        self.sync()
        self.t0 = time.perf_counter()
        return result

    def shared_clock_ms(self) -> float:
        """Training time so far, rank 0's, on every rank: decisions taken on the clock (LR scale,
        QAT switch, stop) must agree across ranks or their weights drift apart."""
        ms = self.clock_ms()
        if self.world > 1 and self.max_wallclock_ms is not None:
            t = torch.tensor([ms], dtype=torch.float64, device=self.ctx.device)
            dist.broadcast(t, src=0)
            ms = float(t.item())
        return ms

    def validate(self) -> EvalResult:
        return evaluate(self.base, self.val_tokens, self.tables, self.cfg.eval_settings(), device=self.ctx.device,
                        rank=self.ctx.rank, world_size=self.world)

    def save(self, path: Path, weights: dict) -> None:
        if not self.ctx.is_main:
            return
        cfg = self.cfg
        resume_state = ResumeState({k: v.detach().cpu() for k, v in self.base.state_dict().items()},
                                   [o.state_dict() for o in self.optimizers], self.loader.stream.state(), self.step,
                                   self.train_ms, self.qat_on, list(self.qat_rules), self.plans, self.ema).to_dict()
        meta = {"step": self.step, "train_time_ms": self.train_ms, TOKENS_SEEN_KEY: self.tokens_seen,
                "world_size": self.world, "qat_on": self.qat_on, "ema": self.ema is not None}
        if self.plans:  # the grids the weights were trained toward: build's fill offers them (contender 'qat')
            meta[QAT_PLAN_KEY] = [r.to_json() for r in self.qat_rules]
        save_checkpoint(path, Checkpoint({k: v.detach().float().cpu() for k, v in weights.items()}, cfg.model,
                                         cfg.to_dict(), meta, resume_state, cfg.model_builder), overwrite=self.force)
