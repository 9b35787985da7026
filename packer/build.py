"""``golfpack build``: checkpoint + pipeline spec -> one verified, budgeted artifact file."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..codec.pipeline import complete_hessians, encode_state_dict
from ..codec.registry import decoder_table, discover
from ..codec.spec import load_spec
from ..model.builders import builder_module, model_meta, tensor_roles
from ..model.console import progress_bar
from ..model.files import atomic_write_bytes, refuse_existing
from ..trainer.calibrate import calib_path, collect_hessians, load_hessians
from .bundle import bootstrap_member, build_bundle
from .ledger import Ledger, artifact_ledger, format_ledger
from .models import open_checkpoint
from .runtime.artifact import BOOTSTRAP, CHALLENGE_CAP, WEIGHTS, Manifest, write_artifact
from .verify import verify_bytes
from .version import golfpack_version


class BudgetError(ValueError):
    """The artifact would exceed its byte budget; nothing was written."""


@dataclass
class BuildOptions:
    budget: int = CHALLENGE_CAP
    calib: str | None = None  # a .calib.pt file, or a training-shard glob to calibrate on
    calib_tokens: int = 262_144
    force: bool = False
    fill: bool | None = None  # fill the budget (codec/fill.py); None: as the pipeline spec says
    fill_tolerance: float = 0.001  # land within this fraction under the budget
    model: str | None = None  # the model builder named on the command line (--model), if any
    sens_tokens: int = 32_768  # loss sensitivities from this many training tokens (when none are beside the checkpoint)
    score_tokens: int = 32_768  # held-out training tokens that score fill's contenders; 0: no closed loop


def resolve_hessians(checkpoint: Path, model_fn: Callable[[], torch.nn.Module], calib: str | None, tokens: int,
                     seq_len: int, echo: Callable[[str], None]) -> dict[str, torch.Tensor] | None:
    if calib is not None and calib.endswith(".pt"):
        return load_hessians(calib)
    if calib is not None:
        echo(f"calibrating GPTQ on {tokens:,} tokens of {calib}")
        return collect_hessians(model_fn(), calib, tokens, seq_len)
    beside = calib_path(checkpoint)
    if beside.is_file():
        echo(f"calibration: {beside}")
        return load_hessians(beside)
    return None


def training_shards(calib: str | None, train_config: dict | None) -> str | None:
    """Training shards to read: ``--calib``'s glob, else the run's own, if they are here."""
    from ..model.shards import resolve_shards

    for glob in (calib, (train_config or {}).get("train_files")):
        if isinstance(glob, str) and not glob.endswith(".pt"):
            try:
                resolve_shards(glob)
                return glob
            except ValueError:
                continue
    return None


def closed_loop(checkpoint: Path, model: torch.nn.Module, shards: str | None, options: BuildOptions, seq_len: int,
                table, echo: Callable[[str], None]) -> tuple[dict | None, Callable[[bytes], float] | None]:
    """The fill's loss sensitivities (beside the checkpoint, or measured on the shards) and the
    closed loop's scorer (held-out training tokens after those calibration reads)."""
    from ..trainer.calibrate import collect_sensitivity, heldout_tokens, sens_path
    from .records.script import contender_score

    sens = None
    if sens_path(checkpoint).is_file():
        echo(f"sensitivity: {sens_path(checkpoint)}")
        sens = load_hessians(sens_path(checkpoint), "sensitivity")
    elif shards is not None and options.sens_tokens:
        echo(f"measuring loss sensitivities on {options.sens_tokens:,} tokens of {shards}")
        sens = collect_sensitivity(model, shards, options.sens_tokens, seq_len, skip=options.calib_tokens)
    if shards is None or not options.score_tokens:
        echo("closed loop: off (" + ("--score-tokens 0" if shards else "no training shards here: give --calib SHARDS")
             + "); the allocation by prediction ships")
        return sens, None
    tokens = heldout_tokens(shards, model.vocab_size, options.calib_tokens + options.sens_tokens,
                            options.score_tokens + 1)
    echo(f"closed loop: contenders scored on {options.score_tokens:,} held-out training tokens of {shards}")
    return sens, contender_score(model, tokens, seq_len, table)


def fill_budget(state: dict[str, torch.Tensor], spec, hessians, container_budget: int, meta: dict,
                options: BuildOptions, progress: bool, echo: Callable[[str], None], sens=None,
                score=None) -> bytes:
    """The container that fills ``container_budget`` (the budget less code, bootstrap, manifest
    and zip structure), with a progress bar over its encode steps."""
    from ..codec.fill import fill

    if container_budget <= 0:
        raise BudgetError(f"the code and structure alone use the whole budget of {options.budget:,} bytes")
    with progress_bar(progress, desc="fill", unit="step") as bar:
        alloc = fill(state, spec, hessians, container_budget, meta, options.fill_tolerance,
                     progress=lambda msg: (bar.set_postfix_str(msg[:60]), bar.update(1)), sensitivity=sens,
                     score=score)
    for line in alloc.log:
        echo(f"fill: {line}")
    return alloc.container


def build(checkpoint: str | Path, pipeline: str, out: str | Path, options: BuildOptions = BuildOptions(),
          echo: Callable[[str], None] = print, progress: bool = True) -> Ledger:
    out, checkpoint = Path(out), Path(checkpoint)
    refuse_existing(out, options.force)
    if options.budget < 1:
        raise ValueError(f"budget must be a positive number of bytes, got {options.budget}")
    registry = discover()
    spec = load_spec(pipeline, registry)
    fill = spec.fill if options.fill is None else options.fill
    ckpt = open_checkpoint(checkpoint, options.model)
    model = ckpt.build_model()  # a state dict that does not fit the model fails here, not inside the artifact
    state = ckpt.state_dict
    spec = spec.with_roles(tensor_roles(model))
    used = sorted({s.name for name in state for s in spec.rule_for(name).stages})
    hessians = resolve_hessians(checkpoint, lambda: model, options.calib, options.calib_tokens, ckpt.train_seq_len, echo) \
        if spec.needs_calibration(list(state)) or fill else None
    hessians = complete_hessians(state, spec, hessians, echo)
    meta = model_meta(ckpt.model_builder, ckpt.model_config, spec.chosen_by_role(list(state)))
    table = {n: d for n, d in decoder_table(registry).items() if n in used}
    bundle = build_bundle(table.values(), [builder_module(ckpt.model_builder)])
    manifest = Manifest(
        python=list(sys.version_info[:2]), golfpack=golfpack_version(),
        code={"member": f"code.{bundle.codec}", "codec": bundle.codec, "raw_bytes": bundle.raw_bytes,
              "minified_bytes": bundle.minified_bytes, "files": len(bundle.files)},
        weights={"member": WEIGHTS}, decoders={n: d.to_json() for n, d in sorted(table.items())},
        pipeline=spec.to_json(), requirements={"required": list(bundle.required), "optional": list(bundle.optional)},
        train_config=ckpt.train_config, sha256={})
    members = [(BOOTSTRAP, bootstrap_member()), (f"code.{bundle.codec}", bundle.compressed)]
    if fill:
        overhead = len(write_artifact([*members, (WEIGHTS, b"")], manifest))  # every byte but the weights
        shards = training_shards(options.calib, ckpt.train_config)
        sens, score = closed_loop(checkpoint, model, shards, options, ckpt.train_seq_len, table, echo)
        weights = fill_budget(state, spec, hessians, options.budget - overhead, meta, options, progress, echo, sens,
                              score)
    else:
        with progress_bar(progress, total=len(state), desc="encode", unit="tensor") as bar:
            weights = encode_state_dict(state, spec, hessians, meta,
                                        progress=lambda name: (bar.set_postfix_str(name), bar.update(1)))
    data = write_artifact([*members, (WEIGHTS, weights)], manifest)
    led = artifact_ledger(verify_bytes(out, data, registry), options.budget)
    if led.total > options.budget:
        raise BudgetError(f"artifact would be {led.total:,} bytes, {led.total - options.budget:,} over the budget of "
                          f"{options.budget:,}; nothing written\n{format_ledger(led)}")
    atomic_write_bytes(out, data, overwrite=options.force)
    return led

