"""``golfpack build``: checkpoint + pipeline spec -> one verified, budgeted artifact file."""
from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

from .. import CHALLENGE_CAP, BudgetError, Calibration
from ..codec.decoders.chain import DecoderSpec
from ..codec.allocatable import used_decoders
from ..codec.registry import discover
from ..codec.rules import PipelineSpec
from ..codec.spec import load_spec, spec_json
from ..trainer.roles import tensor_roles
from ..model.builders import builder_module
from ..model.console import progress_bar
from ..model.files import atomic_write_bytes, refuse_existing
from ..model.shards import check_shards, refuse_validation, resolve_shards
from .bundle import bootstrap_member, build_bundle
from .encode import encode_checkpoint, file_calibration, read_stat_files, resolve_hessians
from .ledger import Ledger, artifact_ledger, format_ledger
from .models import open_checkpoint
from .runtime.artifact import BOOTSTRAP, WEIGHTS, Manifest, write_artifact
from .verify import verify_bytes
from .version import golfpack_version

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, kw_only=True)
class BuildOptions:
    budget: int = CHALLENGE_CAP
    # a .calib.pt file, or training shards: they calibrate what no file beside the checkpoint
    # holds, and score the closed loop (calib_file, shards)
    calib: str | None = None
    calib_tokens: int = 262_144
    force: bool = False
    fill: bool | None = None  # fill the budget (codec/fill.py); None: as the pipeline spec says
    fill_tolerance: float = 0.001  # land within this fraction under the budget
    model: str | None = None  # the model builder named on the command line (--model), if any
    model_overrides: tuple[str, ...] = ()  # --set model.KEY=VALUE: a plain state dict's model config
    sens_tokens: int = 32_768  # loss sensitivities from this many training tokens (when none are beside the checkpoint)
    score_tokens: int = 32_768  # held-out training tokens that score fill's contenders; 0: no closed loop

    @property
    def calib_file(self) -> str | None:
        return self.calib if self.calib is not None and self.calib.endswith(".pt") else None

    @property
    def shards(self) -> str | None:
        return self.calib if self.calib_file is None else None


Members = list[tuple[str, bytes]]


def frame(spec: PipelineSpec, table: Mapping[str, DecoderSpec], model_builder: str,
          train_config: dict | None, budget: int = CHALLENGE_CAP) -> tuple[Members, Manifest]:
    """Everything of an artifact but its weights: the bootstrap and code members, and the
    manifest (``spec`` with its roles resolved; ``table``: the decoders it uses; ``budget``:
    the file's byte budget, recorded for ``inspect``)."""
    bundle = build_bundle(table.values(), [builder_module(model_builder)])
    manifest = Manifest(
        python=list(sys.version_info[:2]), golfpack=golfpack_version(),
        code={"member": f"code.{bundle.codec}", "codec": bundle.codec, "raw_bytes": bundle.raw_bytes,
              "minified_bytes": bundle.minified_bytes, "files": len(bundle.files)},
        weights={"member": WEIGHTS}, decoders={n: d.to_json() for n, d in sorted(table.items())},
        pipeline=spec_json(spec), requirements={"required": list(bundle.required), "optional": list(bundle.optional)},
        train_config=train_config, sha256={}, budget=budget)
    return [(BOOTSTRAP, bootstrap_member()), (f"code.{bundle.codec}", bundle.compressed)], manifest


def frame_size(members: Members, manifest: Manifest) -> int:
    """The artifact's bytes without its weights container."""
    return len(write_artifact([*members, (WEIGHTS, b"")], manifest))


def model_frame_size(spec: PipelineSpec, model: "torch.nn.Module", model_builder: str, train_config: dict,
                     budget: int = CHALLENGE_CAP) -> int:
    """:func:`frame_size` of the artifact ``build`` will make of ``model`` under ``spec``, before
    it is trained: what budget-aware QAT and ``bench qat`` take off a whole file's budget. The
    manifest carries this config, which the final checkpoint's differs from by a few bytes at most."""
    spec = spec.with_roles(tensor_roles(model))
    return frame_size(*frame(spec, used_decoders(spec, model.state_dict()), model_builder, train_config, budget))


def weights_budget(budget: int, frame_bytes: int) -> int:
    """The bytes left for the weights container of a ``budget``-byte file whose rest is ``frame_bytes``."""
    if budget - frame_bytes <= 0:
        raise BudgetError(f"the code and structure alone use the whole budget of {budget:,} bytes")
    return budget - frame_bytes


def build(checkpoint: str | Path, pipeline: str, out: str | Path, options: BuildOptions = BuildOptions(),
          echo: Callable[[str], None] = print, progress: bool = True) -> Ledger:
    out, checkpoint = Path(out), Path(checkpoint)
    refuse_existing(out, options.force)
    if options.budget < 1:
        raise ValueError(f"budget must be a positive number of bytes, got {options.budget}")
    registry = discover()
    spec = load_spec(pipeline, registry)
    spec = replace(spec, fill=spec.fill if options.fill is None else options.fill)
    # before any work, each hostile input through its reader: training shards (headers, never
    # validation data) and the statistics files
    shards = options.shards
    if shards is not None:
        check_shards(refuse_validation(resolve_shards(shards)))
    files = read_stat_files(checkpoint, options.calib_file, sensitivity=spec.fill, log=echo)
    ckpt = open_checkpoint(checkpoint, options.model, options.model_overrides)
    model = ckpt.build_model()  # a state dict that does not fit the model fails here, not inside the artifact
    state = ckpt.state_dict
    spec = spec.with_roles(tensor_roles(model))
    if spec.needs_calibration(list(state)) and shards is None and files.hessians is None:
        raise ValueError(f"{checkpoint}: no calibration statistics for the pipeline's GPTQ stages: give --calib "
                         "'data/fineweb_train_*.bin' (training shards to calibrate on) or a .calib.pt file")
    table = used_decoders(spec, state)
    members, manifest = frame(spec, table, ckpt.model_builder, ckpt.train_config, options.budget)
    budget = weights_budget(options.budget, frame_size(members, manifest)) if spec.fill else None  # before calibrating
    hessians = resolve_hessians(files, model, shards=shards, calib_tokens=options.calib_tokens,
                                seq_len=ckpt.train_seq_len, log=echo) \
        if spec.needs_calibration(list(state)) or spec.fill else None
    if spec.fill:
        calibration = file_calibration(files, model, hessians, shards, seen=ckpt.tokens_seen,
                                       calib_tokens=options.calib_tokens, sens_tokens=options.sens_tokens,
                                       score_tokens=options.score_tokens, seq_len=ckpt.train_seq_len, log=echo)
        bar_args = {"desc": "fill", "unit": "step"}
    else:
        calibration = Calibration(hessians or {})
        bar_args = {"total": len(state), "desc": "encode", "unit": "tensor"}
    with progress_bar(progress, **bar_args) as bar:
        weights = encode_checkpoint(ckpt, model, spec, calibration, budget=budget, tolerance=options.fill_tolerance,
                                    log=echo, progress=lambda msg: (bar.set_postfix_str(msg[:60]), bar.update(1)))
    data = write_artifact([*members, (WEIGHTS, weights)], manifest)
    led = artifact_ledger(verify_bytes(out, data, registry), options.budget)
    if led.total > options.budget:
        raise BudgetError(f"artifact would be {led.total:,} bytes, {led.total - options.budget:,} over the budget of "
                          f"{options.budget:,}; nothing written\n{format_ledger(led)}")
    atomic_write_bytes(out, data, overwrite=options.force)
    return led
