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

from ...codec.decoders.chain import DecoderSpec, decode_container
from ...codec.decoders.container import read_container
from ...model.builders import ModelBuilderError, build_model, builder_module, builder_of, load_weights
from ...model.console import USER_ERRORS, format_result, one_line
from ...model.distributed import init_from_env, shutdown
from .finder import module_file


def load_model(art, files: dict) -> tuple[torch.nn.Module, float]:
    """The packed weights, decoded by the artifact's own decoders, in the packed model (built by
    the artifact's own model module); and the seconds the decode took (it counts against the
    challenge's evaluation time)."""
    t0 = time.perf_counter()
    manifest = art.manifest
    container = read_container(art.members[manifest.weights["member"]])
    ref, config = builder_of(container.meta)
    if module_file(builder_module(ref), files) is None:
        raise ModelBuilderError(f"model module '{builder_module(ref)}' is not in the artifact's own bundle")
    model = build_model(ref, config, container.numel)  # the config's size is checked before anything is built
    table = {name: DecoderSpec(*spec) for name, spec in manifest.decoders.items()}
    state = decode_container(container, table)
    seconds = time.perf_counter() - t0
    return load_weights(model, state, "artifact"), seconds


def cmd_eval(args: argparse.Namespace, art, files: dict) -> int:
    from ...model.evaluate import evaluate_files

    t0 = time.perf_counter()
    ctx = init_from_env(args.device)
    model, decode_seconds = load_model(art, files)
    result = evaluate_files(model, args.val, args.tokenizer, args.seq_len, args.stride, args.batch_seqs, ctx,
                            progress=not args.json)
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
    ev.add_argument("--seq-len", type=positive, default=1024)
    ev.add_argument("--stride", type=positive, default=None)
    ev.add_argument("--batch-seqs", type=positive, default=32)
    ev.add_argument("--device", choices=["cpu", "cuda"], default=None)
    ev.add_argument("--json", action="store_true")
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
