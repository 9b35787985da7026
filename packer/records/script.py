"""What a records folder's ``train_gpt.py`` runs: train, encode, write the model file, decode it
from disk, evaluate, and log every number a submission claims (:data:`USAGE` says how; it is
a string, not this docstring, because the minifier that packs the script drops docstrings).

Every rank trains; rank 0 calibrates GPTQ on training data, encodes with the packed pipeline
and writes ``final_model_<RUN_ID>.gpak`` atomically; then every rank decodes that file and
the evaluation runs on all of them. The run's work folder (``golfpack_run_<RUN_ID>``:
checkpoint, calibration) is removed at the end, so the records folder holds only the files
``golfpack check`` allows.

Shipped inside ``train_gpt.py`` with the trainer, the model, and the encoders and decoders of
the pipeline's stages; it never imports golfpack's packer beyond ``packer.records``.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import time
from functools import partial
from pathlib import Path

import torch.distributed as dist

from ... import budget
from ...codec.qat_plan import grid_planner
from ...codec.registry import decoder_table, packed_registry
from ...codec.rules import PipelineSpec
from ...codec.spec import spec_from_doc
from ...model.checkpoint import load_checkpoint
from ...model.console import USER_ERRORS, one_line
from ...model.distributed import shutdown
from ...model.files import atomic_write_bytes
from ...trainer.calibration_files import CLOSED_LOOP_OFF
from ...trainer.config import TrainConfig, load_config
from ..runtime.artifact import MAX_ARTIFACT_BYTES
from ..runtime.model_file import decode_model_file
from . import lines

USAGE = """usage: python train_gpt.py [key=value ...]
   or: torchrun --standalone --nproc_per_node=N train_gpt.py [key=value ...]

Trains with the packed run's training config, then the challenge's environment variables
(SEED, RUN_ID, ITERATIONS, MAX_WALLCLOCK_SECONDS, VAL_LOSS_EVERY, TRAIN_LOG_EVERY, DATA_PATH,
TOKENIZER_PATH), then key=value arguments (any training config key); encodes the weights into
the 16,000,000 bytes less this script's own size; writes final_model_<RUN_ID>.gpak, decodes it
from disk and evaluates. The log is train_<RUN_ID>.log (RUN_ID defaults to seed<SEED>)."""
ENV_KEYS = {"SEED": "seed", "ITERATIONS": "iterations", "MAX_WALLCLOCK_SECONDS": "max_wallclock_seconds",
            "VAL_LOSS_EVERY": "val_loss_every", "TRAIN_LOG_EVERY": "train_log_every"}


def resolve_config(settings: dict, argv: list[str], environ: dict[str, str]) -> tuple[TrainConfig, str]:
    """The run's config and its RUN_ID: packed config, then environment, then arguments."""
    overrides = [f"{key}={environ[var]}" for var, key in ENV_KEYS.items() if var in environ]
    if "DATA_PATH" in environ:
        overrides += [f"train_files={environ['DATA_PATH']}/fineweb_train_*.bin",
                      f"val_files={environ['DATA_PATH']}/fineweb_val_*.bin"]
    if "TOKENIZER_PATH" in environ:
        overrides.append(f"tokenizer={environ['TOKENIZER_PATH']}")
    cfg = load_config(None, [*overrides, *argv], base=TrainConfig.from_dict(settings["train_config"]))
    run_id = environ.get("RUN_ID", lines.seed_run_id(cfg.seed))
    if not re.fullmatch(lines.RUN_ID, run_id):
        raise ValueError(f"RUN_ID must be up to 64 letters, digits, '_', '-' or '.', got {run_id!r}")
    cfg.out_dir, cfg.log_file = f"golfpack_run_{run_id}", lines.log_name(run_id)
    return cfg, run_id


def encode(cfg: TrainConfig, spec: PipelineSpec, budget: int, score: list, log) -> bytes:
    """The container of the run's final weights, by build's own path (``packer/encode.py``):
    filled to ``budget``, the contenders scored on ``score``, the training tokens the trainer's
    calibration read inside the clock (none: the allocation by prediction ships), or coded as
    the rules say. It reads no training data: that all happened inside the clock."""
    from ... import Calibration
    from ..encode import encode_checkpoint, read_stat_files

    final = Path(cfg.out_dir) / "final.pt"
    files = read_stat_files(final, None, sensitivity=spec.fill, log=log)
    ckpt = load_checkpoint(final, cfg.model_builder)
    if spec.fill and not score:
        log(CLOSED_LOOP_OFF.format("calibration read no scoring tokens: score_tokens or calib_tokens is 0"))
    calibration = Calibration(files.hessians or {}, files.sensitivity, score)  # both empty unless the spec fills
    return encode_checkpoint(ckpt, ckpt.build_model(), spec, calibration, budget=budget if spec.fill else None, log=log)


def main(settings: dict, script: str, argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    try:
        return run(settings, script, argv)
    except USER_ERRORS as e:
        print(f"train_gpt.py: error: {one_line(e)}", file=sys.stderr)
        return 1
    finally:
        shutdown()


def run(settings: dict, script: str, argv: list[str]) -> int:
    from ...model.evaluate import evaluate_files
    from ...trainer.train import Logger, train

    cfg, run_id = resolve_config(settings, argv, dict(os.environ))
    rank = int(os.environ.get("RANK", "0"))
    model_path = Path(lines.model_name(run_id))
    for mine in (cfg.log_file, cfg.out_dir, model_path):  # the work folder is removed at the end
        if rank == 0 and Path(mine).exists():
            raise FileExistsError(f"{mine} exists: remove it or set RUN_ID for a new run")
    registry = packed_registry(settings["stages"])
    spec = spec_from_doc(settings["pipeline"], "packed", registry)
    code_bytes, left = os.path.getsize(script), budget(script)  # left: the model file's, the API's one formula
    if cfg.qat_budget > 0:  # budget-aware QAT plans for this file's own budget, under the packed pipeline
        cfg.qat_budget, cfg.qat_pipeline = left, settings["pipeline"]
    result = train(cfg, force=True, planner=partial(grid_planner, registry=registry), keep_score=spec.fill)
    log = Logger(result.ctx, Path(cfg.log_file), print)
    if result.ctx.is_main:
        data = encode(cfg, spec, left, result.score, log)
        atomic_write_bytes(model_path, data)
    if result.ctx.distributed:
        dist.barrier()
    t0 = time.perf_counter()
    model = decode_model_file(model_path, decoder_table(registry), (cfg.model_builder,), limit=MAX_ARTIFACT_BYTES)
    val = evaluate_files(model, cfg.val_files, cfg.tokenizer, cfg.eval_settings(settings.get("eval_stride")),
                         ctx=result.ctx, progress=False)
    eval_ms = 1000.0 * (time.perf_counter() - t0)
    model_bytes = model_path.stat().st_size
    sha = hashlib.sha256(model_path.read_bytes()).hexdigest()
    log(lines.MODEL.format(bytes=model_bytes, file=model_path.name, sha256=sha))
    log(lines.CODE.format(bytes=code_bytes))
    log(lines.TOTAL.format(bytes=code_bytes + model_bytes))
    log(lines.ROUNDTRIP.format(val_loss=val.val_loss, val_bpb=val.val_bpb, eval_ms=eval_ms))
    log(lines.EXACT.format(val_loss=val.val_loss, val_bpb=val.val_bpb))
    log(lines.FULL.format(val_loss=val.val_loss, val_bpb=val.val_bpb))
    if result.ctx.distributed:
        dist.barrier()  # leave together: a rank tearing gloo down while another still works can abort it
    if result.ctx.is_main:  # the folder keeps what a submission holds (golfpack check's list), not the work files
        shutil.rmtree(cfg.out_dir, ignore_errors=True)
    return 0
