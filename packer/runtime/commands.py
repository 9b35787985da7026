"""Inside an artifact: ``eval``, ``train`` and ``verify``.

It imports only shipped code (model, trainer, the codec's decoders); ``bootstrap`` has
already verified the file and put the bundle's import hook in place before :func:`main` runs.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from ...codec.decoders.chain import DecoderSpec
from ...model.builders import builder_module
from ...model.console import USER_ERRORS, format_result, one_line, printable
from ...model.distributed import init_from_env, shutdown
from ...model.eval_settings import EvalSettings
from .finder import module_file
from .model_file import decode_model


def load_model(art, files: dict) -> tuple[torch.nn.Module, float]:
    """The packed weights, decoded by the artifact's own decoders, in the packed model (built by
    the artifact's own model module), and the seconds the decode took."""
    def allow(ref: str) -> str | None:
        if module_file(builder_module(ref), files) is None:
            return f"model module '{printable(builder_module(ref))}' is not in the artifact's own bundle"
        return None

    manifest = art.manifest
    table = {name: DecoderSpec(*spec) for name, spec in manifest.decoders.items()}
    return decode_model(art.members[manifest.weights["member"]], table, allow, "artifact")


def cmd_eval(args: argparse.Namespace, art, files: dict) -> int:
    from ...model.evaluate import evaluate_files

    t0 = time.perf_counter()
    settings = EvalSettings(args.seq_len, args.stride, args.batch_seqs)  # refused before any work
    ctx = init_from_env(args.device)
    model, decode_seconds = load_model(art, files)
    result = evaluate_files(model, args.val, args.tokenizer, settings, ctx=ctx,
                            progress=args.progress or not args.json)
    shutdown()
    if ctx.is_main:
        out = {**result.to_dict(), "wall_seconds": time.perf_counter() - t0, "world_size": ctx.world_size,
               "decode_seconds": decode_seconds}
        print(json.dumps(out) if args.json else f"{format_result(out)}\ndecode_time:{decode_seconds:.2f}s")
    return 0


def cmd_train(args: argparse.Namespace, art, files: dict) -> int:
    from ...trainer.config import TrainConfig, load_config
    from ...trainer.train import train

    packed = TrainConfig.from_dict(art.manifest.train_config) if art.manifest.train_config else None
    cfg = load_config(args.config, args.overrides, base=packed)
    train(cfg, force=args.force)
    shutdown()
    return 0


def cmd_verify(args: argparse.Namespace, art, files: dict) -> int:
    model, seconds = load_model(art, files)  # the bootstrap already checked every hash
    n = sum(p.numel() for p in model.parameters())
    print(f"ok: hashes verified, {len(art.manifest.sha256) + 1} members, weights decode to {n} parameters "
          f"in {seconds:.2f}s")
    return 0


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def main(argv: list[str], art, files: dict) -> int:
    ap = argparse.ArgumentParser(prog="submission.pyz", description="A golfpack artifact.")
    sub = ap.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("eval", help="score the packed weights (val_bpb)")
    ev.add_argument("--val", required=True)
    ev.add_argument("--tokenizer", required=True)
    ev.add_argument("--seq-len", type=positive, default=EvalSettings.seq_len)
    ev.add_argument("--stride", type=positive, default=EvalSettings.stride)
    ev.add_argument("--batch-seqs", type=positive, default=EvalSettings.batch_seqs)
    ev.add_argument("--device", choices=["cpu", "cuda"], default=None)
    ev.add_argument("--json", action="store_true")
    ev.add_argument("--progress", action="store_true", help="progress on stderr even with --json")
    tr = sub.add_parser("train", help="retrain from the packed code (the packed run's config by default)")
    tr.add_argument("--config", default=None)
    tr.add_argument("--force", action="store_true")
    tr.add_argument("overrides", nargs="*")
    sub.add_parser("verify", help="check hashes and that the weights decode")
    args = ap.parse_args(argv)
    try:
        return {"eval": cmd_eval, "train": cmd_train, "verify": cmd_verify}[args.command](args, art, files)
    except USER_ERRORS as e:
        print(f"submission: error: {one_line(e)}", file=sys.stderr)
        return 1
