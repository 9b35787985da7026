"""Checkpoint -> container, from files: the calibration a checkpoint's run left beside it (or
measured on the training shards at hand), handed to ``golfpack.compress``.

``golfpack build`` and a records script's ``train_gpt.py`` both call :func:`encode_checkpoint`
(the records bundle ships this module with the encoders), and it calls the public
``compress``, as a participant's own script does: one path from weights to bytes. What differs
between the callers is only where their settings come from (the command line, or the packed
training config) and where the container goes (an artifact, or ``final_model_<RUN_ID>.gpak``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .. import Calibration, compress
from ..codec.decoders.grid import Grid
from ..codec.rules import PipelineSpec
from ..model.builders import model_meta
from ..model.checkpoint import QAT_PLAN_KEY, Checkpoint
from ..trainer.calibration_files import CLOSED_LOOP_OFF, CLOSED_LOOP_ON, calib_path, collect_hessians, \
    collect_sensitivity, load_hessians, scoring_batches, sens_path
from ..trainer.qat import MAX_RULES, parse_rules

Log = Callable[[str], None]


@dataclass(frozen=True)
class StatFiles:
    """The statistics files a build reads: GPTQ's Hessians (a ``.calib.pt`` given as ``--calib``,
    else the one beside the checkpoint) and the loss sensitivities beside it."""

    hessians: dict[str, torch.Tensor] | None = None
    sensitivity: dict[str, torch.Tensor] | None = None


def read_stat_files(checkpoint: Path, calib_file: str | None, *, sensitivity: bool, log: Log) -> StatFiles:
    """Each statistics file the build will use, read through the strict reader before any other
    work: a crafted one is refused before a model is built or a token calibrated on.
    ``calib_file`` (a ``.calib.pt`` given on the command line) wins over the one beside the
    checkpoint; training shards only fill in what no file has (:func:`resolve_hessians`)."""
    hessians = sens = None
    if calib_file is not None:
        hessians = load_hessians(calib_file)
    elif calib_path(checkpoint).is_file():
        hessians = load_hessians(calib_path(checkpoint))
        log(f"calibration: {calib_path(checkpoint)}")
    if sensitivity and sens_path(checkpoint).is_file():
        sens = load_hessians(sens_path(checkpoint), "sensitivity")
        log(f"sensitivity: {sens_path(checkpoint)}")
    return StatFiles(hessians, sens)


def resolve_hessians(files: StatFiles, model: torch.nn.Module, *, shards: str | None, calib_tokens: int,
                     seq_len: int, log: Log) -> dict[str, torch.Tensor] | None:
    """GPTQ's Hessians: the file's, else calibrated on the training ``shards``, else none."""
    if files.hessians is None and shards is not None:
        log(f"calibrating GPTQ on {calib_tokens:,} tokens of {shards}")
        return collect_hessians(model, shards, calib_tokens, seq_len)
    return files.hessians


def file_calibration(files: StatFiles, model: torch.nn.Module, hessians: dict[str, torch.Tensor] | None,
                     shards: str | None, *, calib_tokens: int, sens_tokens: int, score_tokens: int, seq_len: int,
                     seen: int | None, log: Log) -> Calibration:
    """The fill's calibration: ``hessians``, the loss sensitivities (the file's, or measured on
    ``sens_tokens`` of ``shards`` after calibration's) and the closed loop's ``score_tokens``
    held-out training tokens (``calibration_files.scoring_batches``: ones the run never reached
    when the shards hold them; ``seen``: ``Checkpoint.tokens_seen``)."""
    sens = files.sensitivity
    if sens is None and shards is not None and sens_tokens:
        log(f"measuring loss sensitivities on {sens_tokens:,} tokens of {shards}")
        sens = collect_sensitivity(model, shards, sens_tokens, seq_len, skip=calib_tokens)
    if shards is None or not score_tokens:
        log(CLOSED_LOOP_OFF.format("score_tokens is 0" if shards else "no training shards given: --calib SHARDS"))
        return Calibration(hessians or {}, sens)
    score, what = scoring_batches(shards, model.vocab_size, calib_tokens + sens_tokens, score_tokens, seq_len, seen)
    log(CLOSED_LOOP_ON.format(what))
    return Calibration(hessians or {}, sens, score)


def read_plan(raw: object) -> dict[str, Grid] | None:
    """A checkpoint's ``qat_plan`` (the grids its weights were trained toward, written by the
    trainer as QAT rules on tensor names, read by the grid's one reader) as ``name -> Grid``
    for the fill's ``qat`` contender; None when absent. Anything but
    well-formed rules of real grids is refused. Build-only: no artifact ships it."""
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) > MAX_RULES:
        raise ValueError("checkpoint meta 'qat_plan' must be a list of [name, bits, clip(, colscale, cols)]")
    try:
        rules = parse_rules(raw)
    except ValueError as e:
        raise ValueError(f"checkpoint meta 'qat_plan': malformed ({e})") from None
    if any(rule.bits == 0 for rule in rules):  # a plan's grids are real ones
        raise ValueError("checkpoint meta 'qat_plan': malformed (an entry with no grid, bits 0)")
    return {rule.pattern: rule.grid for rule in rules}


def encode_checkpoint(ckpt: Checkpoint, model: torch.nn.Module, spec: PipelineSpec, calibration: Calibration, *,
                      budget: int | None, tolerance: float = 0.001, log: Log = print,
                      progress: Callable[[str], None] | None = None) -> bytes:
    """The container of ``ckpt``'s weights (``model`` built from it) under ``spec``: filled to
    ``budget`` bytes when the spec fills (the fill's log lines go to ``log``), else coded as the
    rules are written. The container's meta records the model's builder and config, so an
    artifact and ``eval`` rebuild it."""
    trained = read_plan(ckpt.meta.get(QAT_PLAN_KEY)) if spec.fill else None
    if trained:
        log(f"qat plan: the weights were trained toward {len(trained)} planned grids (contender 'qat')")
    return compress(model, calibration, budget, pipeline=spec, log=log, progress=progress, state_dict=ckpt.state_dict,
                    meta=model_meta(ckpt.model_builder, ckpt.model_config), tolerance=tolerance, trained=trained)
