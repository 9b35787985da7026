"""Inside an artifact: ``eval``, ``train`` and ``verify``. Ships in every artifact, so it imports
only the shipped parts of golfpack (model, trainer, container reader, decoders)."""
from __future__ import annotations

import argparse
import json
import sys
import time
import zipfile

from ..codec.container import read_container
from ..codec.decode import decode_container, table_from_json
from ..model.config import GPTConfig
from ..model.distributed import init_from_env, shutdown
from ..model.gpt import GPT


def load_model(z: zipfile.ZipFile, manifest: dict) -> GPT:
    container = read_container(z.read(manifest["weights"]["member"]))
    table = table_from_json(manifest["decoders"])
    model = GPT(GPTConfig.from_dict(container.meta["model_config"]))
    model.load_state_dict(decode_container(container, table), strict=True)
    return model


def cmd_eval(args: argparse.Namespace, z: zipfile.ZipFile, manifest: dict) -> int:
    from ..model.evaluate import evaluate_files

    t0 = time.perf_counter()
    ctx = init_from_env(args.device)
    model = load_model(z, manifest)
    result = evaluate_files(model, args.val, args.tokenizer, args.seq_len, args.stride, args.batch_seqs, ctx,
                            progress=not args.json)
    shutdown()
    if ctx.is_main:
        out = {**result.to_dict(), "wall_seconds": time.perf_counter() - t0, "world_size": ctx.world_size}
        if args.json:
            print(json.dumps(out))
        else:
            print(f"val_loss:{out['val_loss']:.8f}\nval_bpb:{out['val_bpb']:.8f}\n"
                  f"tokens:{out['tokens']} bytes:{out['bytes']} eval_time:{out['seconds']:.2f}s")
    return 0


def cmd_train(args: argparse.Namespace, z: zipfile.ZipFile, manifest: dict) -> int:
    from ..trainer.config import TrainConfig, load_config
    from ..trainer.train import train

    packed = TrainConfig.from_dict(manifest["train_config"]) if manifest.get("train_config") else None
    cfg = load_config(args.config, args.overrides, base=packed)
    train(cfg, force=args.force)
    shutdown()
    return 0


def cmd_verify(args: argparse.Namespace, z: zipfile.ZipFile, manifest: dict) -> int:
    model = load_model(z, manifest)  # the bootstrap already checked every hash
    n = sum(p.numel() for p in model.parameters())
    print(f"ok: hashes verified, {len(manifest['sha256'])} members, weights decode to {n} parameters")
    return 0


def main(argv: list[str], z: zipfile.ZipFile, manifest: dict) -> int:
    ap = argparse.ArgumentParser(prog="submission.pyz", description="A golfpack artifact.")
    sub = ap.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("eval", help="score the packed weights (val_bpb)")
    ev.add_argument("--val", required=True)
    ev.add_argument("--tokenizer", required=True)
    ev.add_argument("--seq-len", type=int, default=1024)
    ev.add_argument("--stride", type=int, default=None)
    ev.add_argument("--batch-seqs", type=int, default=32)
    ev.add_argument("--device", choices=["cpu", "cuda"], default=None)
    ev.add_argument("--json", action="store_true")
    tr = sub.add_parser("train", help="retrain from the packed code (the packed run's config by default)")
    tr.add_argument("--config", default=None)
    tr.add_argument("--force", action="store_true")
    tr.add_argument("overrides", nargs="*")
    sub.add_parser("verify", help="check hashes and that the weights decode")
    args = ap.parse_args(argv)
    try:
        return {"eval": cmd_eval, "train": cmd_train, "verify": cmd_verify}[args.command](args, z, manifest)
    except (ValueError, OSError, RuntimeError) as e:
        print(f"submission: error: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}",
              file=sys.stderr)
        return 1
