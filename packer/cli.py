"""The ``golfpack`` command line.

Every bad input, whether a usage error click finds or a bad file golfpack finds, is one line
on stderr and exit status 1 (a traceback only with ``golfpack --debug ...``). The exceptions
are errors whose whole message is the point: an over-budget build prints its ledger, and a
demo without data says where to get it.
"""
from __future__ import annotations

import functools
import json
import re
import sys
from pathlib import Path

import click

from .. import CHALLENGE_CAP
from ..model.console import USER_ERRORS, format_result, one_line, printable
from .runtime.artifact import MAX_ARTIFACT_BYTES

POSITIVE = click.IntRange(min=1)
MODEL_HELP = ("Your own model: PATH.py:function, module:function, or an entry point of 'golfpack.models' "
              "(docs/models.md). Default: golfpack's GPT, or the builder the checkpoint names.")


def model_option(f):
    return click.option("--model", "model", default=None, metavar="BUILDER", help=MODEL_HELP)(f)


PIPELINE_HELP = ("Pipeline spec: default (fills the budget), compact (one fixed grid per role: the least code "
                 "inlined), a .toml file, or inline rules.")  # the names of codec/spec.py's PIPELINES


def pipeline_option(f):
    return click.option("--pipeline", default="default", show_default=True, help=PIPELINE_HELP)(f)


def model_set_option(f):
    return click.option("--set", "model_sets", multiple=True, metavar="model.KEY=VALUE",
                        help="A plain state dict's model config (it starts from the module's DEFAULT_CONFIG), "
                             "repeatable.")(f)


def eval_options(f):
    """``--seq-len``, ``--stride``, ``--batch-seqs`` (passed on as one ``settings``:
    :class:`EvalSettings`, whose defaults they show) and ``--device``."""
    from ..model.eval_settings import EvalSettings

    defaults = EvalSettings()

    @functools.wraps(f)
    def wrapper(*args, seq_len, stride, batch_seqs, **kwargs):
        return f(*args, settings=EvalSettings(seq_len, stride, batch_seqs), **kwargs)

    for option in reversed([
        click.option("--seq-len", default=defaults.seq_len, show_default=True, type=POSITIVE),
        click.option("--stride", type=POSITIVE, default=defaults.stride,
                     help="Sliding-window stride (default: contiguous windows)."),
        click.option("--batch-seqs", default=defaults.batch_seqs, show_default=True, type=POSITIVE,
                     help="Windows per forward pass."),
        click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None),
    ]):
        wrapper = option(wrapper)
    return wrapper


def use_model(model: str | None) -> str | None:
    """Make ``--model``'s builder importable; its ``module:function`` name, or None."""
    if model is None:
        return None
    from .models import resolve_model

    return resolve_model(model)


def error_message(e: BaseException) -> str:
    from .. import BudgetError
    from .demo import DataNotFoundError

    if isinstance(e, (BudgetError, DataNotFoundError)):  # these explain themselves over several lines
        return "\n".join(printable(line) for line in str(e).strip().splitlines())
    return one_line(e)


class FriendlyGroup(click.Group):
    def main(self, args=None, prog_name=None, **kwargs):  # type: ignore[override]
        args = sys.argv[1:] if args is None else list(args)
        debug = "--debug" in args[:1]
        try:
            return super().main(args, prog_name, standalone_mode=False, **kwargs)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(f"golfpack: error: {one_line(e.format_message())}", err=True)
            sys.exit(1)
        except click.Abort:
            click.echo("golfpack: error: aborted", err=True)
            sys.exit(1)
        except USER_ERRORS as e:
            if debug:
                raise
            click.echo(f"golfpack: error: {error_message(e)}", err=True)
            sys.exit(1)


@click.group(cls=FriendlyGroup)
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors (give it first).")
def main(debug: bool) -> None:
    """golfpack: train, compress, pack and score tiny language models under a hard byte cap."""


@main.group()
def data() -> None:
    """Prepare token shards in the challenge format."""


@data.command("tokenize")
@click.argument("documents", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--tokenizer", required=True, type=click.Path(path_type=Path), help="SentencePiece .model file.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder for shards.")
@click.option("--name", default="train", show_default=True, help="Shard name: fineweb_{name}_NNNNNN.bin")
@click.option("--shard-tokens", default=100_000_000, show_default=True, type=POSITIVE, help="Tokens per shard.")
@click.option("--force", is_flag=True, help="Replace existing shards of this name.")
def data_tokenize(documents, tokenizer, out_dir, name, shard_tokens, force) -> None:
    """Tokenize DOCUMENTS (.jsonl with a 'text' field, or text files) into shards."""
    from ..model.console import progress_bar
    from ..trainer.tokenize import iter_documents, tokenize_to_shards

    with progress_bar(desc="tokenize", unit="doc") as bar:
        report = tokenize_to_shards(
            iter_documents(documents), tokenizer, out_dir, name, shard_tokens, force, on_document=bar.update
        )
    click.echo(f"documents:{report.documents} tokens:{report.tokens} shards:{len(report.shards)}")
    for p in report.shards:
        click.echo(f"  {p}")


@main.command("eval")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--val", required=True, help="Validation shard glob, e.g. 'data/fineweb_val_*.bin'.")
@click.option("--tokenizer", required=True, type=click.Path(path_type=Path))
@eval_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@model_option
@model_set_option
def eval_cmd(checkpoint, val, tokenizer, settings, device, as_json, model, model_sets) -> None:
    """Score CHECKPOINT (golfpack checkpoint, plain state dict, or a records folder's model
    file) with the challenge's val_bpb."""
    from ..model.distributed import init_from_env, shutdown
    from ..model.evaluate import evaluate_files

    ctx = init_from_env(device)
    if checkpoint.suffix == ".gpak":
        from ..codec.registry import decoder_table
        from ..model.builders import GPT_BUILDER
        from .models import trusted_builders
        from .runtime.model_file import decode_model_file

        from ..model.anatomy import ModelBuilderError

        ref = use_model(model)
        builders = (GPT_BUILDER, *trusted_builders(), *([ref] if ref else []))
        try:
            net = decode_model_file(checkpoint, decoder_table(), builders, limit=MAX_ARTIFACT_BYTES)
        except ModelBuilderError as e:
            raise ModelBuilderError(f"{e}; if you trust the code it names, pass it as --model (module:function, or "
                                    "its file.py:function)") from None
    else:
        from .models import open_checkpoint

        net = open_checkpoint(checkpoint, use_model(model), model_sets).build_model()
    result = evaluate_files(net, val, tokenizer, settings, ctx=ctx)
    shutdown()
    if ctx.is_main:
        echo_result(result.to_dict(), as_json)


def echo_result(d: dict, as_json: bool) -> None:
    click.echo(json.dumps(d) if as_json else format_result(d))


@main.command("stages")
@click.option("--check", "chain", default=None, help="Type-check a chain or inline pipeline instead of listing.")
def stages_cmd(chain: str | None) -> None:
    """List every codec stage: kinds, parameters with defaults, decoder and origin."""
    from ..codec.registry import discover
    from ..codec.spec import load_spec, parse_chain
    from ..codec.stage import params_of

    registry = discover()
    if chain is not None:
        if re.match(r"\s*[^\s=]+=", chain):  # 'glob=chain; ...' is a pipeline, 'stage k=v -> ...' a chain
            spec = load_spec(chain, registry)
            for rule in spec.rules:
                click.echo(f"{','.join(rule.patterns)}: {rule.chain}")
        else:
            click.echo(" -> ".join(s.describe() for s in parse_chain(chain, registry)))
        return
    for name, reg in sorted(registry.items()):
        if reg.cls is None:
            click.echo(f"{name:<8} {'BROKEN':<18} {'-':<50} {reg.origin}")
            click.echo(f"{'':<8} {reg.error}")
            continue
        params = " ".join(f"{k}={v}" for k, v in params_of(reg.cls).items()) or "-"
        click.echo(f"{name:<8} {reg.cls.consumes + ' -> ' + reg.cls.produces:<18} {params:<50} {reg.origin}")
        click.echo(f"{'':<8} {reg.cls.summary}  [decoder {reg.cls.decoder().module}]")


QAT_NOISE = click.FloatRange(0, 1)  # grid steps; the trainer refuses the same range in a config
TRAIN_FLAGS = {  # CLI flag -> config key
    "train_files": "train_files", "val_files": "val_files", "tokenizer": "tokenizer", "out_dir": "out_dir",
    "iterations": "iterations", "max_wallclock_seconds": "max_wallclock_seconds", "device": "device",
    "seed": "seed", "qat_start": "qat_start_frac", "qat_noise": "qat_noise", "calib_tokens": "calib_tokens",
}


@main.command("train")
@click.option("--config", "config_file", type=click.Path(path_type=Path), default=None, help="TOML/JSON config.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Config override, repeatable.")
@click.option("--train", "train_files", default=None, help="Training shard glob.")
@click.option("--val", "val_files", default=None, help="Validation shard glob.")
@click.option("--tokenizer", default=None)
@click.option("--out", "out_dir", default=None, help="Run folder (final.pt, train.log, final.calib.pt).")
@click.option("--iterations", type=int, default=None)
@click.option("--max-wallclock-seconds", type=float, default=None, help="Stop after this much training time.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None)
@click.option("--seed", type=int, default=None)
@click.option("--pipeline", default=None, help="Pipeline spec whose quantizers QAT imitates (default, file or inline).")
@click.option("--qat-start", type=float, default=None, help="Fraction of training after which QAT is on.")
@click.option("--budget", type=POSITIVE, is_flag=False, flag_value=CHALLENGE_CAP, default=None,
              help="Budget-aware QAT: from --qat-start on, train toward the grids that fill this artifact size "
                   f"(bytes, decimal; --budget alone: {CHALLENGE_CAP:,}), planned on the weights of that moment "
                   "under --pipeline. Add --qat-noise 1: best measured at 2.5 and 3.5 bits/param (docs/benchmarks.md).")
@click.option("--qat-noise", type=QAT_NOISE, default=None,
              help="QAT's forward: 0 rounds to the grid (straight-through, the default); W in (0, 1] adds "
                   "uniform noise W grid steps wide instead.")
@click.option("--calib-tokens", type=int, default=None, help="Collect GPTQ calibration from this many training tokens.")
@click.option("--nproc", type=POSITIVE, default=1, show_default=True, help="Processes (torchrun) for DDP.")
@click.option("--resume", type=click.Path(path_type=Path), default=None, help="Continue from a checkpoint.")
@click.option("--save-every", type=click.IntRange(min=0), default=0, help="Save a resumable checkpoint every N steps.")
@click.option("--force", is_flag=True, help="Overwrite an existing final checkpoint in the run folder.")
@model_option
def train_cmd(config_file, overrides, pipeline, budget, nproc, resume, save_every, force, model, **flags) -> None:
    """Train a model with the challenge recipe (Muon + Adam), optionally quantization-aware."""
    from ..codec.qat_plan import grid_planner
    from ..codec.spec import load_spec, quantizer_rules, spec_doc
    from ..trainer.roles import tensor_roles
    from ..model.builders import build_model
    from ..trainer.config import TrainConfig, load_config, set_builder
    from ..trainer.launch import launch
    from .build import model_frame_size, weights_budget

    base = TrainConfig()
    if (ref := use_model(model)) is not None:
        set_builder(base, ref, " (--model)")
    sets = [f"{TRAIN_FLAGS[k]}={v}" for k, v in flags.items() if v is not None] + list(overrides)
    cfg = load_config(config_file, sets, base=base)
    if budget is not None:
        if not cfg.qat_start_frac < 1:
            raise click.UsageError("--budget trains toward its plan from --qat-start on: give --qat-start (e.g. 0.8)")
        spec = load_spec(pipeline or "default")
        cfg.qat_pipeline = spec_doc(spec)
        frame = model_frame_size(spec, build_model(cfg.model_builder, cfg.model), cfg.model_builder, cfg.to_dict(),
                                 budget)
        cfg.qat_budget = weights_budget(budget, frame)
    elif pipeline is not None:
        cfg.qat_rules = quantizer_rules(load_spec(pipeline), tensor_roles(build_model(cfg.model_builder, cfg.model)))
    model_file = (model or "").rpartition(":")[0]
    result = launch(cfg, nproc=nproc, resume=resume, save_every=save_every, force=force,
                    model_file=model_file if model_file.endswith(".py") else None, planner=grid_planner)
    if result is not None:
        click.echo(f"checkpoint:{result.checkpoint}" + (f" calibration:{result.calib}" if result.calib else ""))


@main.command("build")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@pipeline_option
@click.option("--calib", default=None, help="Training data at hand: a shard glob (calibrates what no file beside the "
              "checkpoint holds, and scores the closed loop), or a .calib.pt file.")
@click.option("--calib-tokens", default=262_144, show_default=True, type=POSITIVE,
              help="Tokens to calibrate on from --calib shards.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Artifact to write, e.g. submission.pyz.")
@click.option("--budget", default=CHALLENGE_CAP, show_default=True, type=POSITIVE,
              help="Byte budget of the whole file (decimal).")
@click.option("--fill/--no-fill", default=None,
              help="Choose bits and clip per tensor (rules starting with rtn/gptq) to fill the budget "
                   "[default: as the pipeline says; the default pipeline fills].")
@click.option("--score-tokens", default=32_768, show_default=True, type=click.IntRange(min=0),
              help="--fill: score the final contenders on this many held-out training tokens (0: ship the "
                   "allocation by prediction).")
@click.option("--sens-tokens", default=32_768, show_default=True, type=click.IntRange(min=0),
              help="--fill: measure loss sensitivities on this many training tokens when the checkpoint has none "
                   "beside it (0: Hessian proxy).")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@click.option("--json", "as_json", is_flag=True, help="Print the ledger as JSON.")
@model_option
@model_set_option
def build_cmd(checkpoint, pipeline, calib, calib_tokens, out, budget, fill, score_tokens, sens_tokens, force, as_json,
              model, model_sets) -> None:
    """Quantize, code and pack CHECKPOINT with its code into one self-extracting artifact."""
    from .build import BuildOptions, build
    from .ledger import format_ledger

    options = BuildOptions(budget=budget, calib=calib, calib_tokens=calib_tokens, force=force, fill=fill,
                           model=use_model(model), model_overrides=model_sets, sens_tokens=sens_tokens,
                           score_tokens=score_tokens)
    led = build(checkpoint, pipeline, out, options, echo=lambda m: click.echo(m, err=True))
    click.echo(json.dumps(led.to_dict()) if as_json else format_ledger(led))
    if not as_json:
        click.echo(f"wrote {out} ({led.total:,} bytes, sha256 {led.sha256})")


def torch_checkpoint(data: bytes) -> bool:
    """Whether ``data`` looks like ``torch.save``'s output (a zip whose first member is
    ``<name>/data.pkl``, or the legacy pickle), read from its first bytes only."""
    if data[:2] == b"\x80\x02":
        return True
    n = int.from_bytes(data[26:28], "little") if len(data) >= 30 else 0
    return data[:4] == b"PK\x03\x04" and data[30 : 30 + n].endswith(b"/data.pkl")


@main.command("inspect")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--budget", default=None, type=POSITIVE,
              help="Measure against this many bytes [default: what the artifact was built for; a model file: "
                   "the challenge's cap].")
@click.option("--json", "as_json", is_flag=True, help="Print the ledger as JSON.")
@click.option("--plot", type=click.Path(path_type=Path), default=None, help="Write a PNG of where the bytes go.")
@click.option("--force", is_flag=True, help="Overwrite an existing --plot file.")
def inspect_cmd(artifact, budget, as_json, plot, force) -> None:
    """Print the byte ledger of ARTIFACT: an artifact, or a records folder's model file (.gpak).
    Parses it as data; never imports or runs anything it names."""
    from ..codec.registry import decoder_table
    from ..model.files import refuse_existing
    from .ledger import artifact_ledger, format_ledger, model_file_ledger, plot_ledger, require_matplotlib
    from .verify import read_artifact, verify_bytes

    if plot is not None:  # before any work
        refuse_existing(plot, force)
        require_matplotlib()
    data = read_artifact(artifact)
    if data[:4] == b"GPAK":
        led = model_file_ledger(str(artifact), data, budget or CHALLENGE_CAP, decoder_table())
    elif torch_checkpoint(data):
        raise ValueError(f"{artifact}: a PyTorch checkpoint (a training run's, or a plain state dict), not an artifact "
                         "or a model file: `golfpack build` makes an artifact of it, `golfpack eval` scores it")
    else:
        led = artifact_ledger(verify_bytes(Path(artifact), data), budget)
    click.echo(json.dumps(led.to_dict()) if as_json else format_ledger(led))
    if plot is not None:
        plot_ledger(led, str(plot), force)
        if not as_json:
            click.echo(f"plot: {plot}")


@main.command("run")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--val", required=True, help="Validation shard glob.")
@click.option("--tokenizer", required=True, type=click.Path(path_type=Path))
@click.option("--nproc", default=1, show_default=True, type=POSITIVE, help="Processes (torchrun) for evaluation.")
@eval_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def run_cmd(artifact, val, tokenizer, nproc, settings, device, as_json) -> None:
    """Verify ARTIFACT's hashes, then run its own evaluation and print val_bpb."""
    from .run import run_artifact

    r = run_artifact(artifact, val, str(tokenizer), settings, nproc=nproc, device=device, progress=not as_json)
    if as_json:
        click.echo(json.dumps(r.to_json()))
        return
    echo_result(r.to_json(), False)
    click.echo(f"artifact_bytes:{r.artifact_bytes} sha256:{r.sha256}")
    verdict = "within" if r.wall_seconds <= r.eval_limit_seconds else "OVER"
    click.echo(f"eval_wall_time:{r.wall_seconds:.2f}s ({verdict} the {r.eval_limit_seconds:.0f}s limit)")
    click.echo(f"decode_time:{r.decode_seconds:.2f}s ({100 * r.decode_seconds / r.eval_limit_seconds:.2f}% "
               "of the limit)")


@main.command("inline")
@click.argument("script", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Records folder to write.")
@pipeline_option
@click.option("--force", is_flag=True, help="Write into a folder that is not empty, replacing its files.")
def inline_cmd(script, out, pipeline, force) -> None:
    """Make SCRIPT, your own training script that imports golfpack, one self-contained records
    script: your source as written, with golfpack's API and the pipeline's codec packed above it
    (docs/own-script.md). Prints the code bytes: yours, golfpack's encode and decode paths."""
    from .inline import format_inline, inline

    click.echo(format_inline(inline(script, out, pipeline, force)))


@main.command("submit")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Records folder to write.")
@pipeline_option
@click.option("--seeds", default="1337", show_default=True, help="Comma-separated seeds to run, e.g. 1337,42,2025.")
@click.option("--nproc", default=1, show_default=True, type=POSITIVE, help="Processes per run (torchrun).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Training config override baked into train_gpt.py, repeatable.")
@click.option("--train", "train_files", default=None, help="Training shards for the runs here [default: the run's].")
@click.option("--val", "val_files", default=None, help="Validation shards for the runs here [default: the run's].")
@click.option("--tokenizer", default=None, help="Tokenizer for the runs here [default: the run's].")
@click.option("--eval-stride", type=POSITIVE, default=None, help="Sliding-window stride of the final evaluation.")
@click.option("--name", default=None, help="submission.json: name.")
@click.option("--author", default=None, help="submission.json: author.")
@click.option("--github-id", default=None, help="submission.json: github_id.")
@click.option("--blurb", default=None, help="submission.json: blurb.")
@click.option("--script-only", "mode", flag_value="script", help="Only write train_gpt.py and requirements.txt.")
@click.option("--collect", "mode", flag_value="collect",
              help="Seeds were run elsewhere: read their logs into submission.json and README.md.")
@click.option("--force", is_flag=True, help="Write into a folder that is not empty; rerun existing seeds.")
@model_option
def submit_cmd(checkpoint, out, pipeline, seeds, nproc, overrides, train_files, val_files, tokenizer, eval_stride,
               name, author, github_id, blurb, mode, force, model) -> None:
    """Write a challenge records folder from CHECKPOINT's run: train_gpt.py (trains, encodes,
    writes the model file, decodes it, evaluates), run it for every seed, then submission.json,
    requirements.txt and a README skeleton, every number read from the logs."""
    from .records.submit import SubmitOptions, submit

    try:
        seed_list = tuple(int(s) for s in seeds.split(","))
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {seeds!r}") from None
    data = {k: v for k, v in {"train_files": train_files, "val_files": val_files, "tokenizer": tokenizer}.items() if v}
    info = {k: v for k, v in {"name": name, "author": author, "github_id": github_id, "blurb": blurb}.items() if v}
    options = SubmitOptions(pipeline=pipeline, seeds=seed_list, nproc=nproc, overrides=tuple(overrides), data=data,
                            eval_stride=eval_stride, info=info, force=force, mode=mode or "run", model=use_model(model))
    doc = submit(checkpoint, out, options, echo=click.echo)
    if doc is not None:
        click.echo(f"val_bpb {doc['val_bpb']:.8f} (std {doc['val_bpb_std']:.8f}, {len(doc['seed_results'])} seeds); "
                   f"largest artifact {doc['bytes_total']:,} bytes")
        click.echo(f"wrote {out}/submission.json and README.md; now: golfpack check {out}")


@main.command("check")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--python", "python", default=None, metavar="X.Y", help="Target Python [default: submission.json's].")
def check_cmd(folder, python) -> None:
    """Re-derive every number of a records FOLDER from its files and logs; exit 1 on any problem."""
    from .records.check import check_folder, format_report

    target = None
    if python is not None:
        if not re.fullmatch(r"3\.[0-9]+", python):
            raise ValueError(f"--python must look like 3.12, got {python!r}")
        target = (3, int(python.split(".")[1]))
    report = check_folder(folder, target)
    click.echo(format_report(report))
    if not report.ok:
        sys.exit(1)


@main.group()
def bench() -> None:
    """Benchmarks that print ratios against baselines measured in the same run."""


@bench.command("rd")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--train", "train_files", required=True,
              help="Training shard glob: the closed loop's held-out tokens (and the sensitivities, if none are "
                   "beside the checkpoint).")
@click.option("--val", required=True, help="Validation shard glob.")
@click.option("--tokenizer", required=True, type=click.Path(path_type=Path))
@click.option("--val-tokens", default=262_144, show_default=True, type=click.IntRange(min=0),
              help="Score the first N validation tokens (0: all).")
@click.option("--seq-len", default=None, type=POSITIVE, help="Evaluation window (default: the run's train_seq_len).")
@click.option("--fractions", default="0.8,0.9,1.0,1.1", show_default=True,
              help="--fill budgets, as fractions of the record export's bytes.")
@click.option("--plot", type=click.Path(path_type=Path), default=None, help="Write the R-D plot (PNG).")
@click.option("--score-tokens", default=32_768, show_default=True, type=POSITIVE,
              help="The closed loop scores the contenders on this many held-out training tokens.")
@click.option("--force", is_flag=True, help="Overwrite an existing --plot file.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where the validation tokens are scored (in fp32 on either; encoding runs on the CPU).")
@click.option("--mirror", is_flag=True,
              help="Also score each export's mirror image w - d: the rise's even part (what a prediction can "
                   "rank) and odd part (the validation gradient along the error); twice the scoring time.")
@model_option
def bench_rd_cmd(checkpoint, train_files, val, tokenizer, val_tokens, seq_len, fractions, plot, score_tokens, force,
                 device, mirror, model) -> None:
    """val_bpb against weight bytes: golfpack (default, --fill) against the records' export."""
    from ..model.files import refuse_existing
    from .bench.rd import format_rd, plot_rd, rd_bench

    if plot is not None:
        refuse_existing(plot, force)
    try:
        fracs = tuple(float(f) for f in fractions.split(","))
    except ValueError:
        raise ValueError(f"--fractions must be comma-separated numbers, got {fractions!r}") from None
    rd = rd_bench(str(checkpoint), train_files, val, str(tokenizer), val_tokens, seq_len, fracs, echo=click.echo,
                  score_tokens=score_tokens, model=use_model(model), device=device, mirror=mirror)
    click.echo(format_rd(rd))
    if plot is not None:
        plot_rd(rd.base, rd.points, str(plot), f"{Path(checkpoint).name}: {rd.params:,} params", force)
        click.echo(f"plot: {plot}")


@bench.command("qat")
@click.option("--train", "train_files", required=True, help="Training shard glob.")
@click.option("--val", required=True, help="Validation shard glob (every model and artifact is scored on all of it).")
@click.option("--tokenizer", required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the runs and artifacts.")
@click.option("--steps", default=300, show_default=True, type=POSITIVE, help="Training steps of every run.")
@click.option("--sizes", default="small,medium", show_default=True, help="Model sizes (small: 2x128, medium: 4x256).")
@click.option("--bits", default="3.5,2.5", show_default=True, help="Budgets, in bits per parameter of the weights.")
@click.option("--qat-start", default=0.7, show_default=True, type=float, help="Fraction of training where QAT starts.")
@click.option("--refresh", default=1, show_default=True, type=click.IntRange(min=0),
              help="Budget-aware QAT: plans after the first.")
@click.option("--noise", default=1.0, show_default=True, type=QAT_NOISE,
              help="Budget-aware QAT's noise, in grid steps (0: round to the grid).")
@click.option("--seq-len", default=1024, show_default=True, type=POSITIVE, help="Evaluation window.")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON after the table.")
@click.option("--force", is_flag=True, help="Overwrite earlier runs and artifacts under --out.")
@click.option("--reuse", is_flag=True, help="Build and score the runs already under --out again; train only missing ones.")
def bench_qat_cmd(train_files, val, tokenizer, out, steps, sizes, bits, qat_start, refresh, noise, seq_len, as_json,
                  force, reuse) -> None:
    """No QAT, QAT toward the written grids, and budget-aware QAT: artifacts' val_bpb at budgets that bind."""
    from dataclasses import asdict

    from .bench.qat import QatBenchOptions, format_qat, qat_bench

    try:
        budgets = tuple(float(b) for b in bits.split(","))
    except ValueError:
        raise ValueError(f"--bits must be comma-separated numbers, got {bits!r}") from None
    opts = QatBenchOptions(train=train_files, val=val, tokenizer=str(tokenizer), out=out, steps=steps,
                           sizes=tuple(s.strip() for s in sizes.split(",")), bits=budgets, qat_start=qat_start,
                           refresh=refresh, noise=noise, seq_len=seq_len, force=force, reuse=reuse)
    runs = qat_bench(opts, echo=click.echo)
    click.echo(format_qat(runs))
    if as_json:
        click.echo(json.dumps([asdict(r) for r in runs]))


@bench.command("coders")
@click.argument("weights", type=click.Path(path_type=Path))
@model_option
def bench_coders_cmd(weights, model) -> None:
    """Lossless coders (ans, ctxans, brotli-11, lrzip) on the records' int6 symbols of WEIGHTS
    (a checkpoint, with its .calib.pt for GPTQ, or a .safetensors file)."""
    from .bench.coders import coders_bench, format_coders

    click.echo(format_coders(coders_bench(weights, use_model(model))))


@main.command("demo")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=None,
              help="Data folder (default: ./data, then ../shared/data).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("runs/demo"), show_default=True)
@click.option("--seconds", default=300.0, show_default=True, type=click.FloatRange(min=1.0),
              help="Training wall-clock budget.")
@click.option("--force", is_flag=True, help="Redo a demo in OUT, replacing its shards, checkpoint and artifact.")
def demo_cmd(data_dir, out_dir, seconds, force) -> None:
    """Train a small model on the CPU, build, inspect and run its artifact."""
    from .demo import find_data, run_demo

    r = run_demo(find_data(data_dir), out_dir, seconds, force, echo=click.echo)
    click.echo(f"float model val_bpb:{r['float_val_bpb']:.8f}" if r["float_val_bpb"] is not None else "")
    echo_result(r, False)
    click.echo(f"artifact:{r['artifact']} bytes:{r['artifact_bytes']} sha256:{r['sha256']}")
