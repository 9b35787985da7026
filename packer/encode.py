"""Checkpoint -> container: the one path by which trained weights become a coded model file.

``golfpack build`` and a records script's ``train_gpt.py`` both call these functions (the
records bundle ships this module with the encoders), so a build and a records run of the same
weights, calibration and budget code the same bytes. What differs between them is only where
their settings come from (the command line, or the packed training config) and where the
container goes (an artifact, or ``final_model_<RUN_ID>.gpak``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import torch

from ..codec.decoders.chain import DecoderSpec
from ..codec.spec import PipelineSpec
from ..model.builders import load_weights, model_meta, tensor_roles
from ..model.checkpoint import Checkpoint
from ..model.scoring import window_losses
from ..trainer.calibrate import calib_path, collect_hessians, collect_sensitivity, heldout_tokens, load_hessians, \
    sens_path
from ..trainer.qat import MAX_RULES, parse_rule

Log = Callable[[str], None]
Score = Callable[[bytes], list[float]]


def roled(spec: PipelineSpec, model: torch.nn.Module) -> PipelineSpec:
    """``spec`` with its ``role:`` patterns resolved against the model's own tensor roles."""
    return spec.with_roles(tensor_roles(model))


def resolve_hessians(checkpoint: Path, model: torch.nn.Module, *, calib: str | None, calib_tokens: int,
                     seq_len: int, log: Log) -> dict[str, torch.Tensor] | None:
    """GPTQ's Hessians: ``calib`` (a ``.calib.pt`` file, or training shards to calibrate on),
    else the calibration file beside the checkpoint, else none."""
    if calib is not None and calib.endswith(".pt"):
        return load_hessians(calib)
    if calib is not None:
        log(f"calibrating GPTQ on {calib_tokens:,} tokens of {calib}")
        return collect_hessians(model, calib, calib_tokens, seq_len)
    beside = calib_path(checkpoint)
    if beside.is_file():
        log(f"calibration: {beside}")
        return load_hessians(beside)
    return None


def contender_score(model: torch.nn.Module, tokens: torch.Tensor, seq_len: int,
                    table: Mapping[str, DecoderSpec]) -> Score:
    """``fill``'s closed loop: a container's weights, decoded with ``table`` into ``model``,
    scored by their mean cross-entropy in each window of ``tokens`` (held-out training tokens)."""
    from ..codec.pipeline import decode_state_dict

    def score(container: bytes) -> list[float]:
        state, _ = decode_state_dict(container, table)
        load_weights(model, state, "contender")
        return window_losses(model, tokens, seq_len)

    return score


def closed_loop(checkpoint: Path, model: torch.nn.Module, shards: str | None, table: Mapping[str, DecoderSpec], *,
                calib_tokens: int, sens_tokens: int, score_tokens: int, seq_len: int,
                log: Log) -> tuple[dict | None, Score | None]:
    """The fill's loss sensitivities (beside the checkpoint, or measured on ``sens_tokens`` of
    ``shards`` after calibration's) and the closed loop's scorer (``score_tokens`` held-out
    training tokens after both)."""
    sens = None
    if sens_path(checkpoint).is_file():
        log(f"sensitivity: {sens_path(checkpoint)}")
        sens = load_hessians(sens_path(checkpoint), "sensitivity")
    elif shards is not None and sens_tokens:
        log(f"measuring loss sensitivities on {sens_tokens:,} tokens of {shards}")
        sens = collect_sensitivity(model, shards, sens_tokens, seq_len, skip=calib_tokens)
    if shards is None or not score_tokens:
        log("closed loop: off (" + ("score_tokens is 0" if shards else "no training shards here: give --calib SHARDS")
            + "); the allocation by prediction ships")
        return sens, None
    tokens = heldout_tokens(shards, model.vocab_size, calib_tokens + sens_tokens, score_tokens + 1)
    log(f"closed loop: contenders scored on {score_tokens:,} held-out training tokens of {shards}")
    return sens, contender_score(model, tokens, seq_len, table)


def read_plan(raw: object) -> dict[str, tuple[int, str, float]] | None:
    """A checkpoint's ``qat_plan`` (the grids its weights were trained toward, written by the
    trainer as QAT rules on tensor names, read by its one reader ``parse_rule``) as ``name ->
    (bits, clip, colscale)`` for the fill's ``qat`` contender; None when absent. Anything but
    well-formed rules of real grids is refused. Build-only: no artifact ships it."""
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) > MAX_RULES:
        raise ValueError("checkpoint meta 'qat_plan' must be a list of [name, bits, clip(, colscale, cols)]")
    plan = {}
    for entry in raw:
        try:
            rule = parse_rule(entry)
        except ValueError:
            rule = None
        if rule is None or rule.bits == 0:  # a plan's grids are real ones
            raise ValueError(f"checkpoint meta 'qat_plan': malformed entry {str(entry)[:80]!r}")
        plan[rule.pattern] = (rule.bits, entry[2], rule.colscale)
    return plan


def encode_checkpoint(ckpt: Checkpoint, spec: PipelineSpec, hessians: Mapping[str, torch.Tensor] | None,
                      table: Mapping[str, DecoderSpec], *, budget: int | None, tolerance: float = 0.001,
                      sens: Mapping[str, torch.Tensor] | None = None, score: Score | None = None, log: Log = print,
                      progress: Callable[[str], None] | None = None) -> bytes:
    """The container of ``ckpt``'s weights under ``spec`` (roles resolved: :func:`roled`):
    filled to ``budget`` bytes (within ``tolerance`` under it; the fill's log lines go to
    ``log``), or with ``budget=None`` coded as the rules are written. ``progress`` is called
    with a short message after each fill step or each tensor."""
    from ..codec.pipeline import complete_hessians, encode_state_dict

    state = ckpt.state_dict
    hessians = complete_hessians(state, spec, hessians, log)
    meta = model_meta(ckpt.model_builder, ckpt.model_config, spec.chosen_by_role(list(state)))
    if budget is None:
        return encode_state_dict(state, spec, hessians, meta, progress=progress)
    from ..codec.fill import fill

    trained = read_plan(ckpt.meta.get("qat_plan"))
    if trained:
        log(f"qat plan: the weights were trained toward {len(trained)} planned grids (contender 'qat')")
    alloc = fill(state, spec, hessians, budget, meta, tolerance, progress=progress, sensitivity=sens, score=score,
                 decoders=table, trained=trained)
    for line in alloc.log:
        log(f"fill: {line}")
    return alloc.container
