"""``python -m golfpack.trainer [--config F] [--resume CKPT] [--force] [key=value ...]``:
the entry point torchrun launches on every rank (``golfpack train --nproc N`` does this)."""
from __future__ import annotations

import argparse
import sys

from ..model.builders import load_module_file
from ..model.console import USER_ERRORS, one_line
from ..model.distributed import shutdown
from .config import load_config
from .train import train


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m golfpack.trainer", description=__doc__)
    ap.add_argument("--config", default=None, help="TOML or JSON config file")
    ap.add_argument("--resume", default=None, help="checkpoint with resume state")
    ap.add_argument("--force", action="store_true", help="overwrite an existing final checkpoint")
    ap.add_argument("--save-every", type=int, default=0, help="save a resumable checkpoint every N steps")
    ap.add_argument("--model-file", default=None, help="a model module to import first (a user's PATH.py)")
    ap.add_argument("--debug", action="store_true")
    ap.add_argument("overrides", nargs="*", help="config overrides key=value (model.num_layers=4)")
    args = ap.parse_args(argv)
    try:
        if args.model_file:
            load_module_file(args.model_file)
        cfg = load_config(args.config, args.overrides)
        train(cfg, resume=args.resume, force=args.force, save_every=args.save_every)
    except USER_ERRORS as e:
        if args.debug:
            raise
        # one write, so that the lines of ranks failing at once never interleave on the shared pipe
        # (print writes the text and its newline apart: "AB\n\n" was seen with two ranks)
        sys.stderr.write(f"golfpack train: error: {one_line(e)}\n")
        sys.stderr.flush()
        return 1
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
