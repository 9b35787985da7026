"""``golfpack submit``: a challenge records folder from a run and a pipeline.

The folder holds ``train_gpt.py`` (the records script: ``script.py`` and everything it
imports, minified and compressed behind ``loader.py``), one ``train_seed<N>.log`` and
``final_model_seed<N>.gpak`` per seed (made by running that very script), ``submission.json``
(every number parsed from those logs and files, never typed), ``requirements.txt`` (the
third-party distributions the bundle imports) and a ``README.md`` skeleton with the byte
ledger. ``golfpack check`` re-derives all of it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Callable

from ... import CHALLENGE_CAP
from ...codec.registry import decoder_table, discover
from ...codec.rules import PipelineSpec
from ...codec.spec import load_spec, spec_doc
from ...model.builders import builder_module
from ...model.checkpoint import Checkpoint
from ...model.distributed import torchrun_command
from ...model.files import atomic_write_bytes
from ...trainer.config import TrainConfig, load_config
from ..bundle import RECORDS_STYLE, CodeBundle, build_bundle, ships_in_records
from ..models import open_checkpoint
from ..version import golfpack_version
from . import loader as loader_module
from .layout import SCRIPT, numbers_of, pipeline_label, render_script, summary
from .lines import log_name, model_name, seed_run_id

RECORDS_CALIB_RESERVE_SECONDS = 4.0  # the records' GPTQ_RESERVE_SECONDS: calibration inside the 600 s


@dataclass(frozen=True, kw_only=True)
class SubmitOptions:
    pipeline: str = "default"
    seeds: tuple[int, ...] = (1337,)
    nproc: int = 1
    overrides: tuple[str, ...] = ()  # key=value baked into the script's config
    data: dict = field(default_factory=dict)  # train_files/val_files/tokenizer for the runs here (default: the run's)
    eval_stride: int | None = None
    info: dict = field(default_factory=dict)  # name, author, github_id, blurb
    force: bool = False
    mode: str = "run"  # run: write the script and run every seed; script: only write it; collect: read the logs
    model: str | None = None  # the model builder named on the command line (--model), if any


MODES = ("run", "script", "collect")


def script_config(ckpt: Checkpoint, spec: PipelineSpec, overrides: tuple[str, ...]) -> TrainConfig:
    """The run's training config, with the challenge's data layout instead of the run's paths
    (``DATA_PATH``/``TOKENIZER_PATH`` or arguments point the script elsewhere), and GPTQ
    calibration switched on when the pipeline needs it, with time reserved for it inside the
    wall-clock cap; ``overrides`` (``--set``) last."""
    cfg = TrainConfig.from_dict(ckpt.train_config)
    defaults = TrainConfig()
    for key in ("train_files", "val_files", "tokenizer", "out_dir", "log_file"):
        setattr(cfg, key, getattr(defaults, key))
    if spec.fill or any(s.needs_calibration for r in spec.rules for s in r.stages):
        cfg.calib_tokens = cfg.calib_tokens if cfg.calib_tokens > 0 else 262_144
        cfg.calib_reserve_seconds = cfg.calib_reserve_seconds or RECORDS_CALIB_RESERVE_SECONDS
    return load_config(None, overrides, base=cfg)


def script_bundle(cfg: TrainConfig, spec: PipelineSpec, eval_stride: int | None) -> CodeBundle:
    """The records script's code: ``script.py``'s closure, the stages the pipeline uses
    (encoders and decoders), the model's module, and ``settings.json``."""
    registry = discover()
    stages = sorted({s.name for r in spec.rules for s in r.stages})
    classes = {n: registry[n].cls for n in stages}
    settings = {"train_config": cfg.to_dict(), "pipeline": spec_doc(spec), "eval_stride": eval_stride,
                "stages": {n: f"{c.__module__}:{c.__qualname__}" for n, c in classes.items()}}
    table = decoder_table(registry)
    return build_bundle([table[n] for n in stages], [builder_module(cfg.model_builder)],
                        entries=[loader_module.ENTRY, *sorted({c.__module__ for c in classes.values()})],
                        allowed=ships_in_records, style=RECORDS_STYLE,
                        data={loader_module.SETTINGS: json.dumps(settings, sort_keys=True, indent=0)})


def script_source(bundle: CodeBundle, pipeline: str) -> bytes:
    return render_script(golfpack_version(), pipeline_label(pipeline), bundle.codec, bundle.compressed)


def readme(doc: dict, cfg: TrainConfig, spec: PipelineSpec, bundle: CodeBundle) -> str:
    rows = "\n".join(f"| {seed} | {r['val_bpb']:.8f} | {r['val_loss']:.8f} | {r['code_bytes']:,} | {r['model_bytes']:,} "
                     f"| {r['artifact_bytes']:,} | {CHALLENGE_CAP - r['artifact_bytes']:,} | {r['steps']} "
                     f"| {r['step_avg_ms']:.2f} | {r['eval_time_s']:.1f} |" for seed, r in doc["seed_results"].items())
    rules = "\n".join(f"- `{r.label}` ({', '.join([*r.patterns, *(f'role:{x}' for x in r.roles)])}): `{r.chain}`"
                      for r in spec.rules)
    return f"""# {doc.get('name') or 'TODO: name'}

{doc.get('blurb') or 'TODO: what this submission does, and what it builds on.'}

**val_bpb {doc['val_bpb']:.8f}** (mean of {len(doc['seed_results'])} seed(s), std {doc['val_bpb_std']:.8f});
largest artifact {doc['bytes_total']:,} bytes of the {CHALLENGE_CAP:,}.

## Byte ledger (from the logs; `golfpack check .` re-derives it)

| seed | val_bpb | val_loss | code bytes | model bytes | total | headroom | steps | step avg ms | eval s |
|---|---|---|---|---|---|---|---|---|---|
{rows}

`train_gpt.py` is {bundle.raw_bytes:,} bytes of source in {len(bundle.files)} files, {bundle.minified_bytes:,} minified,
compressed with {bundle.codec}. The model file is the codec container the script writes
(`final_model_<RUN_ID>.gpak`); both count.

## Model and pipeline

Model: `{cfg.model_builder}` with `{json.dumps(cfg.model, sort_keys=True)}`; trained with
`max_wallclock_seconds={cfg.max_wallclock_seconds}` (negative: 600 s on CUDA), GPTQ calibration on
{cfg.calib_tokens:,} training tokens inside it ({cfg.calib_reserve_seconds:g} s reserved).
Pipeline ({'fills the bytes left after train_gpt.py' if spec.fill else 'grids as written'}):
{rules}

## Reproduce

```bash
pip install -r requirements.txt
SEED=1337 DATA_PATH=./data/datasets/fineweb10B_sp1024 TOKENIZER_PATH=./data/tokenizers/fineweb_1024_bpe.model \\
  torchrun --standalone --nproc_per_node=8 train_gpt.py
```
"""


def write_text(path: Path, text: str, force: bool) -> None:
    atomic_write_bytes(path, text.encode(), overwrite=force)


DATA_KEYS = ("train_files", "val_files", "tokenizer")


def run_paths(train_config: dict, given: dict) -> list[str]:
    """``key=value`` arguments that point the script at the data (``given``, else the run's own),
    made absolute: the script runs inside the records folder."""
    paths = {k: train_config[k] for k in DATA_KEYS if k in train_config} | given
    return [f"{k}={Path(v).resolve()}" for k, v in paths.items()]


def run_seed(out: Path, seed: str, run_args: list[str], options: SubmitOptions, echo: Callable[[str], None]) -> None:
    for stale in (out / log_name(seed_run_id(seed)), out / model_name(seed_run_id(seed))):
        if stale.exists() and not options.force:
            raise FileExistsError(f"{stale} exists (use --force to run seed {seed} again)")
        stale.unlink(missing_ok=True)
    cmd = torchrun_command(options.nproc, str((out / SCRIPT).resolve()), *run_args)  # absolute: never an option
    echo(f"seed {seed}: SEED={seed} {' '.join(cmd)}")
    rc = subprocess.call(cmd, cwd=out, env={**os.environ, "SEED": seed})
    if rc:
        raise RuntimeError(f"seed {seed}: {SCRIPT} exited with status {rc} (see {out / log_name(seed_run_id(seed))})")


def submit(checkpoint: str | Path, out: str | Path, options: SubmitOptions,
           echo: Callable[[str], None] = print) -> dict | None:
    """Write (``script``), then run (``run``), then collect (``collect`` alone: the seeds were
    run elsewhere, e.g. on 8xH100) a records folder. Returns the submission document."""
    out = Path(out)
    if options.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {options.mode!r}")
    if not options.seeds or len(set(options.seeds)) != len(options.seeds) or min(options.seeds) < 0:
        raise ValueError(f"--seeds must be distinct non-negative integers, got {options.seeds}")
    spec = load_spec(options.pipeline)
    ckpt = open_checkpoint(checkpoint, options.model)
    if not ckpt.train_config:
        raise ValueError(f"{checkpoint}: no training config in this checkpoint, so there is no run for train_gpt.py "
                         "to repeat: submit writes golfpack's trainer with a `golfpack train` run's config; to keep "
                         "your own training script, use `golfpack inline` (docs/own-script.md)")
    cfg = script_config(ckpt, spec, options.overrides)
    bundle = script_bundle(cfg, spec, options.eval_stride)
    source = script_source(bundle, options.pipeline)
    if options.mode == "collect":
        if not (out / SCRIPT).is_file() or (out / SCRIPT).read_bytes() != source:
            raise ValueError(f"{out / SCRIPT} is not the script these settings build (same checkpoint, pipeline, "
                             "--set and golfpack version?)")
    else:
        if out.exists() and any(out.iterdir()) and not options.force:
            raise FileExistsError(f"{out} exists and is not empty (use --force to write into it)")
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / SCRIPT, source, overwrite=options.force)
        write_text(out / "requirements.txt", "".join(f"{d}\n" for d in bundle.required), options.force)
        echo(f"wrote {out / SCRIPT} ({len(source):,} bytes; {len(bundle.files)} files; requires "
             f"{', '.join(bundle.required) or 'nothing'})")
    if options.mode == "script":
        return None
    seeds = [str(s) for s in options.seeds]
    if options.mode == "run":
        for seed in seeds:
            run_seed(out, seed, run_paths(ckpt.train_config, options.data), options, echo)
    doc = {"track": "10min_16mb", "date": date.today().isoformat(), **options.info,
           **summary(numbers_of(out, seeds)),
           "golfpack": {"version": golfpack_version(), "pipeline": options.pipeline,
                        "python": list(sys.version_info[:2]), "requirements": list(bundle.required)}}
    write_text(out / "submission.json", json.dumps(doc, indent=2) + "\n", options.force or options.mode == "run")
    if options.force or options.mode == "run" or not (out / "README.md").exists():
        write_text(out / "README.md", readme(doc, cfg, spec, bundle), True)
    else:
        echo(f"kept your {out / 'README.md'} (--force writes the skeleton again)")
    return doc
