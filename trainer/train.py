"""The training loop: the challenge's recipe (Muon + Adam, wall-clock cap, warmdown), with
DDP on any world size, EMA, QAT switched on part-way, exact resume and GPTQ calibration."""
from __future__ import annotations

import contextlib
import copy
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from ..model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from ..model.distributed import DistContext, init_from_env
from ..model.gpt import CONTROL_TENSOR_NAME_PATTERNS, GPT, CastedLinear, restore_low_dim_params_to_fp32
from ..model.scoring import EvalResult, byte_tables_for, evaluate, truncate_for_eval
from ..model.shards import load_tokens
from .calibrate import collect_hessians, save_hessians
from .config import TrainConfig
from .data import DistributedTokenLoader
from .muon import Muon
from .qat import set_qat, switch_is_visible
from .schedule import lr_multiplier, progress_fraction


@dataclass
class TrainResult:
    checkpoint: Path
    steps: int
    train_time_ms: float
    tokens_per_second: float
    val: EvalResult | None
    calib: Path | None


class Logger:
    def __init__(self, ctx: DistContext, logfile: Path | None, echo: Callable[[str], None]):
        self.ctx, self.logfile, self.echo = ctx, logfile, echo

    def __call__(self, msg: str, console: bool = True) -> None:
        if not self.ctx.is_main:
            return
        if console:
            self.echo(msg)
        if self.logfile is not None:
            with open(self.logfile, "a", encoding="utf-8") as f:
                print(msg, file=f)


def build_optimizers(model: GPT, cfg: TrainConfig) -> tuple[list[torch.optim.Optimizer], Muon]:
    """The challenge's split: Muon for block matrices, Adam for embedding, head and controls."""
    named = list(model.blocks.named_parameters())
    is_control = lambda n, p: p.ndim < 2 or any(s in n for s in CONTROL_TENSOR_NAME_PATTERNS)  # noqa: E731
    matrices = [p for n, p in named if not is_control(n, p)]
    scalars = [p for n, p in named if is_control(n, p)] + ([model.skip_weights] if model.skip_weights.numel() else [])
    fused = next(model.parameters()).is_cuda
    adam = lambda params, lr: torch.optim.Adam(  # noqa: E731
        [{"params": params, "lr": lr, "base_lr": lr}], betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps, fused=fused)
    token_lr = cfg.tied_embed_lr if cfg.model.tie_embeddings else cfg.embed_lr
    muon = Muon(matrices, lr=cfg.matrix_lr, momentum=cfg.muon_momentum, backend_steps=cfg.muon_backend_steps,
                weight_decay=cfg.weight_decay)
    for group in muon.param_groups:
        group["base_lr"] = cfg.matrix_lr
    optimizers = [adam([model.tok_emb.weight], token_lr), muon, adam(scalars, cfg.scalar_lr)]
    if model.lm_head is not None:
        optimizers.insert(1, adam([model.lm_head.weight], cfg.head_lr))
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
          echo: Callable[[str], None] = print, save_every: int = 0) -> TrainResult:
    ctx = init_from_env(None if cfg.device == "auto" else cfg.device)
    cuda = ctx.device.type == "cuda"
    out = Path(cfg.out_dir)
    final_path = out / "final.pt"
    if ctx.is_main and final_path.exists() and not force and resume is None:
        raise FileExistsError(f"{final_path} exists (use --force to overwrite, or --resume)")
    out.mkdir(parents=True, exist_ok=True)
    log = Logger(ctx, out / "train.log", echo)
    world = ctx.world_size
    grad_accum = cfg.grad_accum_steps or (8 // world if 8 % world == 0 else 1)
    if cfg.train_batch_tokens % (world * grad_accum * cfg.train_seq_len):
        raise ValueError(f"train_batch_tokens={cfg.train_batch_tokens} must be a multiple of world_size*"
                         f"grad_accum_steps*train_seq_len={world * grad_accum * cfg.train_seq_len}")
    wallclock = cfg.max_wallclock_seconds if cfg.max_wallclock_seconds >= 0 else (600.0 if cuda else 0.0)
    max_wallclock_ms = 1000.0 * wallclock if wallclock > 0 else None
    _seed(cfg.seed)

    # model, optimizers, data
    tables = byte_tables_for(cfg.tokenizer, cfg.model.vocab_size)
    val_tokens = load_tokens(cfg.val_files, cfg.model.vocab_size)
    if cfg.val_max_tokens:
        val_tokens = val_tokens[: cfg.val_max_tokens + 1]
    val_tokens = truncate_for_eval(val_tokens, cfg.train_seq_len)
    base = GPT(cfg.model).to(ctx.device)
    if cuda:
        base = base.bfloat16()
        for m in base.modules():
            if isinstance(m, CastedLinear):
                m.float()
        restore_low_dim_params_to_fp32(base)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    compiled = torch.compile(base, dynamic=False) if cuda and cfg.compile else base
    model = DDP(compiled, device_ids=[ctx.local_rank] if cuda else None, broadcast_buffers=False) if world > 1 else compiled
    optimizers, muon = build_optimizers(base, cfg)
    loader = DistributedTokenLoader(cfg.train_files, ctx.rank, world, ctx.device, cfg.model.vocab_size)
    ema = {k: v.detach().float().clone() for k, v in base.state_dict().items()} if cfg.ema_decay > 0 else None

    step, train_ms, qat_on = 0, 0.0, False
    if resume is not None:
        ck = load_checkpoint(resume)
        if not ck.resume:
            raise ValueError(f"{resume}: checkpoint has no resume state")
        base.load_state_dict(ck.resume["model"])
        for opt, state in zip(optimizers, ck.resume["optimizers"], strict=True):
            opt.load_state_dict(state)
        loader.stream.restore(ck.resume["data"])
        step, train_ms, qat_on = int(ck.resume["step"]), float(ck.resume["train_ms"]), bool(ck.resume["qat_on"])
        ema = ck.resume.get("ema") or ema
        if qat_on:
            set_qat(base, cfg.qat_rules, True)
        log(f"resume:{resume} step:{step} train_time:{train_ms:.0f}ms qat:{qat_on}")

    n_params = sum(p.numel() for p in base.parameters())
    log(f"config:{json.dumps(cfg.to_dict(), sort_keys=True)}", console=False)
    log(f"model_params:{n_params} world_size:{world} grad_accum_steps:{grad_accum} device:{ctx.device}")
    log(f"train_batch_tokens:{cfg.train_batch_tokens} train_seq_len:{cfg.train_seq_len} iterations:{cfg.iterations} "
        f"max_wallclock_seconds:{wallclock:.3f} val_tokens:{val_tokens.numel() - 1}")

    def zero_grad() -> None:
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)

    def run_step() -> torch.Tensor:
        total = torch.zeros((), device=ctx.device)
        for micro in range(grad_accum):
            if world > 1:
                model.require_backward_grad_sync = micro == grad_accum - 1
            x, y = loader.next_batch(cfg.train_batch_tokens, cfg.train_seq_len, grad_accum)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=cuda):
                loss = model(x, y)
            total += loss.detach()
            (loss / grad_accum).backward()
        return total / grad_accum

    qat_primed = False
    if cuda and cfg.compile and cfg.compile_warmup_steps > 0 and resume is None:
        # Prime the compiled paths, then restore the true initial state (the challenge's warmup).
        # If QAT will switch on later, the second half of the warmup primes the QAT graphs too,
        # and a probe proves the compiled model sees the switch before it is trusted to.
        qat_later = bool(cfg.qat_rules) and cfg.qat_start_frac < 1
        init_model = {k: v.detach().clone() for k, v in base.state_dict().items()}
        init_opt = [copy.deepcopy(o.state_dict()) for o in optimizers]
        data_state = loader.stream.state()
        for i in range(cfg.compile_warmup_steps):
            if qat_later and i == cfg.compile_warmup_steps // 2:
                set_qat(base, cfg.qat_rules, True, reset=False)
            zero_grad()
            run_step()
            for opt in optimizers:
                opt.step()
        if qat_later:
            probe = loader.next_batch(cfg.train_batch_tokens, cfg.train_seq_len, grad_accum)

            def probe_forward() -> torch.Tensor:
                with (model.no_sync() if world > 1 else contextlib.nullcontext()), \
                        torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                    return model(*probe)

            qat_primed = switch_is_visible(probe_forward, base, cfg.qat_rules)
            log(f"qat:compiled_switch_{'verified' if qat_primed else 'not_seen (will re-trace at the switch)'}")
        base.load_state_dict(init_model)
        for o, s in zip(optimizers, init_opt):
            o.load_state_dict(s)
        loader.stream.restore(data_state)
        zero_grad()
        log(f"compile_warmup_steps:{cfg.compile_warmup_steps} done")

    def validate() -> EvalResult:
        return evaluate(base, val_tokens, tables, cfg.train_seq_len, None, cfg.val_batch_seqs, ctx.device,
                        ctx.rank, world)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def save(path: Path, weights: dict) -> None:
        if not ctx.is_main:
            return
        resume_state = {"model": {k: v.detach().cpu() for k, v in base.state_dict().items()},
                        "optimizers": [o.state_dict() for o in optimizers], "data": loader.stream.state(),
                        "step": step, "train_ms": train_ms, "qat_on": qat_on, "ema": ema}
        meta = {"step": step, "train_time_ms": train_ms, "tokens_seen": step * cfg.train_batch_tokens,
                "world_size": world, "qat_on": qat_on, "ema": ema is not None}
        save_checkpoint(path, Checkpoint({k: v.detach().float().cpu() for k, v in weights.items()}, cfg.model,
                                         cfg.to_dict(), meta, resume_state))

    from tqdm import tqdm

    by_clock = max_wallclock_ms is not None  # the bar follows whatever ends the run first
    bar = tqdm(total=round(wallclock) if by_clock else cfg.iterations, initial=round(train_ms / 1000) if by_clock else step,
               desc="train", unit="s" if by_clock else "step", file=sys.stderr, disable=None if ctx.is_main else True)
    stop_after: int | None = None
    val: EvalResult | None = None

    def shared_clock_ms() -> float:
        """Training time so far, rank 0's, on every rank: decisions taken on the clock (LR scale,
        QAT switch, stop) must agree across ranks or their weights drift apart."""
        ms = train_ms + 1000.0 * (time.perf_counter() - t0)
        if world > 1 and max_wallclock_ms is not None:
            t = torch.tensor([ms], dtype=torch.float64, device=ctx.device)
            dist.broadcast(t, src=0)
            ms = float(t.item())
        return ms

    sync()
    t0 = time.perf_counter()
    while True:
        elapsed = shared_clock_ms()
        if stop_after is None and max_wallclock_ms is not None and elapsed >= max_wallclock_ms and step > 0:
            stop_after = step
        last = step == cfg.iterations or (stop_after is not None and step >= stop_after)
        if last or (cfg.val_loss_every > 0 and step % cfg.val_loss_every == 0 and step > 0):
            sync()
            train_ms += 1000.0 * (time.perf_counter() - t0)
            val = validate()
            log(f"step:{step}/{cfg.iterations} val_loss:{val.val_loss:.4f} val_bpb:{val.val_bpb:.4f} "
                f"train_time:{train_ms:.0f}ms step_avg:{train_ms / max(step, 1):.2f}ms")
            sync()
            t0 = time.perf_counter()
        if last:
            if stop_after is not None and step < cfg.iterations:
                log(f"stopping_early: wallclock_cap train_time:{train_ms:.0f}ms step:{step}/{cfg.iterations}")
            break
        if cfg.qat_rules and not qat_on and progress_fraction(step, elapsed, cfg.iterations, max_wallclock_ms) >= cfg.qat_start_frac:
            qat_on = True
            names = set_qat(base, cfg.qat_rules, True, reset=not qat_primed)
            log(f"qat:on step:{step} train_time:{elapsed:.0f}ms quantized_weights:{len(names)}"
                + (" graph:primed" if qat_primed else ""))
        scale = lr_multiplier(step, elapsed, cfg.iterations, cfg.lr_warmup_steps, cfg.warmdown_iters, max_wallclock_ms)
        zero_grad()
        train_loss = run_step()
        frac = min(step / cfg.muon_momentum_warmup_steps, 1.0) if cfg.muon_momentum_warmup_steps > 0 else 1.0
        for group in muon.param_groups:
            group["momentum"] = (1 - frac) * cfg.muon_momentum_warmup_start + frac * cfg.muon_momentum
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * scale
        if cfg.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(base.parameters(), cfg.grad_clip_norm)
        for opt in optimizers:
            opt.step()
        zero_grad()
        if ema is not None:
            with torch.no_grad():
                for k, v in base.state_dict().items():
                    ema[k].mul_(cfg.ema_decay).add_(v.float(), alpha=1 - cfg.ema_decay)
        step += 1
        approx_ms = train_ms + 1000.0 * (time.perf_counter() - t0)
        bar.update(min(round(approx_ms / 1000), bar.total) - bar.n if by_clock else 1)
        bar.set_postfix_str(f"step {step}", refresh=False)  # no .item(): it would sync CUDA every step
        if cfg.train_log_every > 0 and (step <= 10 or step % cfg.train_log_every == 0 or
                                        (max_wallclock_ms is not None and approx_ms >= max_wallclock_ms)):
            if world > 1:  # log the global mean (gloo has no AVG)
                dist.all_reduce(train_loss, op=dist.ReduceOp.SUM)
                train_loss /= world
            log(f"step:{step}/{cfg.iterations} train_loss:{train_loss.item():.4f} "
                f"train_time:{approx_ms:.0f}ms step_avg:{approx_ms / step:.2f}ms")
        if save_every and step % save_every == 0:
            sync()
            train_ms += 1000.0 * (time.perf_counter() - t0)
            save(out / f"step_{step:06d}.pt", base.state_dict())
            t0 = time.perf_counter()
    bar.close()

    if world > 1:
        check_ranks_in_sync(base)
        log("ranks_in_sync:true")
    exported = ema if ema is not None else base.state_dict()
    if ema is not None:
        base.load_state_dict({k: v.to(base.state_dict()[k].dtype) for k, v in ema.items()})
        val = validate()
        log(f"ema val_loss:{val.val_loss:.4f} val_bpb:{val.val_bpb:.4f}")
    save(final_path, exported)
    tokens_per_s = step * cfg.train_batch_tokens / max(train_ms / 1000.0, 1e-9)
    log(f"saved:{final_path} steps:{step} train_time:{train_ms:.0f}ms tokens_per_s:{tokens_per_s:.0f} "
        f"tokens_per_s_per_rank:{tokens_per_s / world:.0f}")
    if cuda:
        log(f"peak memory allocated: {torch.cuda.max_memory_allocated() // 2**20} MiB")
    calib = None
    if cfg.calib_tokens > 0 and ctx.is_main:
        if qat_on:
            set_qat(base, cfg.qat_rules, False)
        hessians = collect_hessians(base, cfg.train_files, cfg.calib_tokens, cfg.train_seq_len, device=ctx.device)
        calib = out / "final.calib.pt"
        save_hessians(calib, hessians)
        log(f"calibration:{calib} tokens:{cfg.calib_tokens} hessians:{len(hessians)}")
    if world > 1:
        dist.barrier()
    return TrainResult(final_path, step, train_ms, tokens_per_s, val, calib)
