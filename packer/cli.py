"""The ``golfpack`` command line.

Every command turns a known bad-input error into one line on stderr and exit status 1; a
traceback is shown only with ``golfpack --debug ...``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..model.checkpoint import load_checkpoint

USER_ERRORS = (ValueError, OSError, RuntimeError)


class FriendlyGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except USER_ERRORS as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            click.echo(f"golfpack: error: {msg}", err=True)
            sys.exit(1)


@click.group(cls=FriendlyGroup)
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """golfpack: train, compress, pack and score tiny language models under a hard byte cap."""
    ctx.ensure_object(dict)["debug"] = debug


@main.group()
def data() -> None:
    """Prepare token shards in the challenge format."""


@data.command("tokenize")
@click.argument("documents", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--tokenizer", required=True, type=click.Path(path_type=Path), help="SentencePiece .model file.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder for shards.")
@click.option("--name", default="train", show_default=True, help="Shard name: fineweb_{name}_NNNNNN.bin")
@click.option("--shard-tokens", default=100_000_000, show_default=True, help="Tokens per shard.")
@click.option("--force", is_flag=True, help="Replace existing shards of this name.")
def data_tokenize(documents, tokenizer, out_dir, name, shard_tokens, force) -> None:
    """Tokenize DOCUMENTS (.jsonl with a 'text' field, or text files) into shards."""
    from tqdm import tqdm

    from ..trainer.tokenize import iter_documents, tokenize_to_shards

    with tqdm(desc="tokenize", unit="doc", disable=None) as bar:
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
@click.option("--seq-len", default=1024, show_default=True)
@click.option("--stride", type=int, default=None, help="Sliding-window stride (default: contiguous windows).")
@click.option("--batch-seqs", default=32, show_default=True, help="Windows per forward pass.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def eval_cmd(checkpoint, val, tokenizer, seq_len, stride, batch_seqs, device, as_json) -> None:
    """Score CHECKPOINT (golfpack checkpoint or plain state dict) with the challenge's val_bpb."""
    from ..model.distributed import init_from_env, shutdown
    from ..model.evaluate import evaluate_files

    ctx = init_from_env(device)
    model = load_checkpoint(checkpoint).build_model()
    result = evaluate_files(model, val, tokenizer, seq_len, stride, batch_seqs, ctx)
    shutdown()
    if ctx.is_main:
        echo_result(result.to_dict(), as_json)


def echo_result(d: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(d))
        return
    click.echo(f"val_loss:{d['val_loss']:.8f}")
    click.echo(f"val_bpb:{d['val_bpb']:.8f}")
    click.echo(f"tokens:{d['tokens']} bytes:{d['bytes']} eval_time:{d['seconds']:.2f}s")
