"""golfpack's public API: your model and training script, golfpack's codec.

This folder is the package ``golfpack`` itself (``pyproject.toml`` maps it), so a script
writes ``import golfpack`` and calls::

    calib = golfpack.calibrate(model, my_batches)             # inside the training time
    data = golfpack.compress(model, calib, golfpack.budget())  # the bytes left after the script
    Path("final_model.gpak").write_bytes(data)
    golfpack.decompress(Path("final_model.gpak").read_bytes(), model)

on any ``nn.Module`` whose ``forward(x, y)`` returns the mean token cross-entropy: roles come
from the modules (linear layers are matrices, embeddings embeddings, the output layer found by
running the model once), so no naming convention or builder is needed. ``golfpack build`` and a
records script reach the codec through :func:`compress` too: one path from weights to bytes.

Everything here is the contract (docs/own-script.md); every other module is internal. The
module imports nothing at import time beyond the standard library: it is also the parent of
every golfpack module, and what a script needs loads when called.
"""
from __future__ import annotations

import inspect
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Mapping

if TYPE_CHECKING:
    import torch

    from .codec.decoders.chain import DecoderSpec
    from .codec.decoders.grid import Grid
    from .codec.rules import PipelineSpec
    from .trainer.calibrate import Batch  # (input ids, target ids), each (batch, seq)

__all__ = ["CHALLENGE_CAP", "BudgetError", "Calibration", "budget", "calibrate", "compress", "decompress",
           "shard_batches"]

CHALLENGE_CAP = 16_000_000  # the challenge's cap on code + model file (an artifact, a records folder), decimal bytes

Log = Callable[[str], None]


class BudgetError(ValueError):
    """The bytes do not fit the budget; nothing was written."""


@dataclass
class Calibration:
    """What the codec reads of the training data, gathered by :func:`calibrate` while the
    training time runs (the challenge allows no training data after it): GPTQ's Hessians per
    weight, the loss's sensitivity to each weight, and held-out batches the closed loop scores
    its contenders on. ``tokens`` and ``seconds``: what gathering them read and took."""

    hessians: dict[str, "torch.Tensor"] = field(default_factory=dict)
    sensitivity: dict[str, "torch.Tensor"] | None = None
    score: list[Batch] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0


def shard_batches(pattern: str, seq_len: int, *, batch_seqs: int = 8, vocab_size: int | None = None,
                  skip: int = 0) -> Iterator[Batch]:
    """Endless ``(x, y)`` batches of ``batch_seqs`` windows of ``seq_len`` tokens from challenge
    training shards (a glob), after the first ``skip`` tokens: the convenience for a script
    without a loader of its own."""
    from .model.shards import shard_batches as batches

    return batches(pattern, vocab_size, seq_len, batch_seqs, skip)


def calibrate(model: "torch.nn.Module", batches: Iterable[Batch], *, hessian_tokens: int = 262_144,
              sensitivity_tokens: int = 32_768, score_tokens: int = 32_768, progress: bool = False) -> Calibration:
    """Reads ``batches`` (any iterable of ``(x, y)`` integer tensors of one ``(batch, seq)``
    shape: the script's own loader) in order: ``hessian_tokens`` for GPTQ's Hessians, then
    ``sensitivity_tokens`` for the sensitivities (0: none; the fill then weighs errors by the
    Hessians alone), then ``score_tokens`` kept for the closed loop (0: none), each rounded up
    to whole batches. Runs on the model's device; the model is left as it was."""
    from .model.anatomy import model_device, unwrapped
    from .trainer.calibrate import hessians_of, sensitivities_of, take_tokens

    for name, n in (("hessian_tokens", hessian_tokens), ("sensitivity_tokens", sensitivity_tokens),
                    ("score_tokens", score_tokens)):
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"{name} must be a whole number of tokens >= 0, got {n!r}")
    t0 = time.perf_counter()
    model = unwrapped(model)
    try:  # what golfpack asks of a model it has never seen, said before any batch is read
        inspect.signature(model.forward).bind(0, 0)
    except TypeError as e:
        raise ValueError(f"model.forward must take (x, y) and return the mean loss: {e}") from None
    device = model_device(model)
    stream = iter(batches)
    taken = [take_tokens(stream, n) for n in (hessian_tokens, sensitivity_tokens, score_tokens)]
    hessians = hessians_of(model, taken[0], device, progress) if taken[0] else {}
    sens = sensitivities_of(model, taken[1], device, progress) if taken[1] else None
    tokens = sum(x.numel() for part in taken for x, _ in part)
    return Calibration(hessians, sens, taken[2], tokens, time.perf_counter() - t0)


def contender_score(model: "torch.nn.Module", batches: list[Batch], table: Mapping[str, "DecoderSpec"]):
    """The fill's closed loop: a container's weights, decoded with ``table`` into ``model``,
    scored by their mean cross-entropy on each held-out sequence."""
    import torch

    from .codec.decoders.chain import decode_container
    from .codec.decoders.container import read_container
    from .model.anatomy import load_weights, model_device
    from .trainer.calibrate import mean_loss

    device = model_device(model)
    rows = [(x[i : i + 1].to(device), y[i : i + 1].to(device)) for x, y in batches for i in range(x.shape[0])]

    @torch.no_grad()
    def score(container: bytes) -> list[float]:
        state = decode_container(read_container(container), table)
        load_weights(model, state, "contender")
        was_training = model.training
        model.eval()
        losses = [float(mean_loss(model, x, y)) for x, y in rows]
        model.train(was_training)
        return losses

    return score


HOST = "golfpack.codec.host"  # the installed side: pipelines by name or file, the registry's stages


def _inlined():
    """What ``golfpack inline`` packed beside the API in a records script (its pipeline, module
    ``golfpack._packed``, ``codec/rules.py``), or None where golfpack is installed."""
    try:
        from . import _packed as packed
    except ImportError:
        return None
    return packed


def _host():
    """``codec/host.py``, imported by name: ``golfpack inline`` packs what the API's import
    statements reach, and an inlined script has no use for the pipeline parser or the registry
    of installed stages and plugins (it has only the pipeline it packed)."""
    import importlib

    return importlib.import_module(HOST)


def _pipeline(pipeline: "str | PipelineSpec | None") -> "PipelineSpec":
    """``None``: the default pipeline, or the one an inlined script packed; a name or a file:
    that pipeline, where golfpack is installed (an inlined script has only the one it packed)."""
    from .codec.rules import PipelineSpec, packed_spec

    if isinstance(pipeline, PipelineSpec):
        return pipeline
    packed = _inlined()
    if packed is None:
        return _host().load_spec("default" if pipeline is None else pipeline)
    if pipeline not in (None, packed.NAME):
        raise ValueError(f"this script packed the pipeline {packed.NAME!r} (golfpack inline --pipeline), "
                         f"not {pipeline!r}")
    return packed_spec(packed)


def _decoders() -> "dict[str, DecoderSpec]":
    """The decoders this golfpack trusts: the installed stages' (built in, and plugins), or
    those of the pipeline an inlined script packed (nothing installed where it runs joins in)."""
    from .codec.rules import packed_decoders

    packed = _inlined()
    return _host().decoder_table() if packed is None else packed_decoders(packed)


def compress(model: "torch.nn.Module", calibration: Calibration | None = None, budget: int | None = None, *,
             pipeline: "str | PipelineSpec | None" = None, log: Log | None = None,
             progress: Callable[[str], None] | None = None, state_dict: Mapping[str, "torch.Tensor"] | None = None,
             meta: Mapping[str, object] | None = None, tolerance: float = 0.001,
             trained: "Mapping[str, Grid] | None" = None) -> bytes:
    """``model``'s weights as a container of at most ``budget`` bytes (golfpack's model file).

    A pipeline that fills (the default) chooses each matrix's bits, clip, column scales, row
    steps and low-rank correction by predicted loss to land within ``tolerance`` under ``budget``, then,
    given ``calibration.score``, ships the best of its contenders on those held-out batches.
    Other pipelines code the weights as their rules say and refuse a result over ``budget``.
    Reads no data beyond ``calibration``; leaves ``model``'s weights as they were.

    ``log`` receives the fill's ``fill:`` lines; ``progress`` a short message per step.
    ``pipeline``: a name (``default``, also what ``None`` means, or ``compact``), a pipeline file or
    a spec; in a script ``golfpack inline`` wrote, the pipeline it packed. ``state_dict``: the
    weights to code when not the model's own (a checkpoint's, in its stored dtypes); ``meta``: more
    for the container's meta (``build`` records the model's builder); ``trained``: the grids the
    weights were trained toward (budget-aware QAT's plan, for the ``qat`` contender)."""
    from .codec.decoders.container import ALIASES_KEY
    from .codec.pipeline import complete_hessians, encode_state_dict, shared_tensors
    from .codec.rules import RULE_BY_ROLE_KEY
    from .model.anatomy import unwrapped
    from .trainer.roles import tensor_roles

    model = unwrapped(model)
    log = log or (lambda line: None)
    spec = _pipeline(pipeline)
    spec = spec.with_roles(tensor_roles(model))
    source = model.state_dict() if state_dict is None else state_dict
    aliases = shared_tensors(source)  # a tied head's weight is the embedding's: coded once
    state = {k: v.detach().cpu().clone() for k, v in source.items() if k not in aliases}
    if spec.fill and (budget is None or budget < 1):
        raise BudgetError(f"pipeline {spec.source} fills a budget: give a positive number of bytes, got {budget!r}")
    calibration = calibration or Calibration()
    hessians = complete_hessians(state, spec, calibration.hessians or None, log)
    meta = {**(meta or {}), **({RULE_BY_ROLE_KEY: r} if (r := spec.chosen_by_role(list(state))) else {}),
            **({ALIASES_KEY: aliases} if aliases else {})}
    if not spec.fill:
        data = encode_state_dict(state, spec, hessians, meta, progress=progress)
        if budget is not None and len(data) > budget:
            raise BudgetError(f"the weights code to {len(data):,} bytes, over the budget of {budget:,}")
        return data
    return _fill(model, state, spec, hessians, budget, meta, tolerance, calibration, trained, log, progress)


def _fill(model: "torch.nn.Module", state: dict[str, "torch.Tensor"], spec: "PipelineSpec",
          hessians: Mapping[str, "torch.Tensor"], budget: int, meta: dict, tolerance: float, calibration: Calibration,
          trained: "Mapping[str, Grid] | None", log: Log, progress: Callable[[str], None] | None) -> bytes:
    """``compress`` for a pipeline that fills: the fill, closed loop and all. Its own function
    because only it reaches the fill: a script ``golfpack inline`` packs with a pipeline that
    does not fill ships none of it (``inline.py: FILL_FUNCTION``)."""
    from .codec.allocatable import used_decoders
    from .codec.fill import fill

    table = used_decoders(spec, state)
    original = {k: v.detach().clone() for k, v in model.state_dict().items()} if calibration.score else None
    try:
        alloc = fill(state, spec, hessians, budget, meta, tolerance, progress=progress,
                     sensitivity=calibration.sensitivity, decoders=table, trained=trained,
                     score=contender_score(model, calibration.score, table) if calibration.score else None)
    finally:
        if original is not None:
            model.load_state_dict(original)
    for line in alloc.log:
        log(f"fill: {line}")
    return alloc.container


MAX_MODEL_FILE_BYTES = 1 << 30  # a model file read by path: bounded before it is read


def decompress(data: "bytes | str | os.PathLike", model: "torch.nn.Module | None" = None) -> dict[str, "torch.Tensor"]:
    """The state dict coded in ``data`` (a container's bytes, or the path of a model file),
    loaded into ``model`` (strictly) when given. The container is read as hostile input: its
    sizes are bounded and checked before anything is allocated, nothing in it is imported or
    unpickled, and its SHA-256 must match."""
    from .codec.decoders.chain import decode_container
    from .codec.decoders.container import read_container
    from .model.anatomy import load_weights, unwrapped
    from .model.files import read_regular

    source = "model data"
    if not isinstance(data, (bytes, bytearray, memoryview)):
        source, data = str(data), read_regular(Path(data), MAX_MODEL_FILE_BYTES)
    state = decode_container(read_container(bytes(data)), _decoders())
    if model is not None:
        load_weights(unwrapped(model), state, source)
    return state


def budget(script: "str | os.PathLike | None" = None, cap: int = CHALLENGE_CAP) -> int:
    """The bytes left for the model file: ``cap`` (the challenge's 16,000,000) minus the size of
    ``script``, by default the running script (``__main__``), so a script fills exactly what is
    left after itself."""
    if script is None:
        script = getattr(sys.modules.get("__main__"), "__file__", None)
        if script is None:
            raise BudgetError("budget(): no running script to measure (interactive session): pass its path")
    size = os.stat(script).st_size
    if size >= cap:
        raise BudgetError(f"{script} alone is {size:,} bytes, the whole cap of {cap:,}")
    return cap - size
