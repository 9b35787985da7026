"""``golfpack demo``: the whole job on a small default, from a fresh clone.

Find data -> tokenize the training documents (if needed) -> train a small model on the CPU
for a few minutes -> build the artifact -> print its ledger -> run it -> val_bpb and bytes.

Data is looked for in ``--data``, then the challenge layout ``./data/``, then the project's
``../shared/data/``. Two layouts are understood:

* challenge: ``datasets/fineweb10B_sp1024/fineweb_{train,val}_*.bin`` and
  ``tokenizers/fineweb_1024_bpe.model``;
* shared: ``fineweb/fineweb_docs_200_raw.jsonl`` (training text),
  ``fineweb/fineweb_val_sp1024_prefix_000000.bin`` and ``tokenizers/fineweb_1024_bpe.model``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HOW_TO_GET_DATA = """no data found. golfpack looked in --data, ./data/ and ../shared/data/ for either
  the challenge layout: data/datasets/fineweb10B_sp1024/fineweb_{train,val}_*.bin + data/tokenizers/fineweb_1024_bpe.model
    (get it with the challenge's downloader: python data/cached_challenge_fineweb.py --variant sp1024 in a clone of
    https://github.com/openai/parameter-golf), or
  the shared layout: fineweb/fineweb_docs_200_raw.jsonl, fineweb/fineweb_val_sp1024_prefix_000000.bin and
    tokenizers/fineweb_1024_bpe.model
then run: golfpack demo --data DIR"""


class DataNotFoundError(FileNotFoundError):
    """No usable data; the message says where golfpack looked and how to get data."""


@dataclass(frozen=True)
class DemoData:
    root: Path
    train: str | None  # shard glob, or None when documents must be tokenized first
    docs: Path | None
    val: str
    tokenizer: Path


def find_data(explicit: Path | None) -> DemoData:
    candidates = [explicit] if explicit is not None else [Path("data"), Path("..") / "shared" / "data"]
    for root in candidates:
        challenge = root / "datasets" / "fineweb10B_sp1024"
        tok = root / "tokenizers" / "fineweb_1024_bpe.model"
        if tok.is_file() and sorted(challenge.glob("fineweb_train_*.bin")) and sorted(challenge.glob("fineweb_val_*.bin")):
            return DemoData(root, str(challenge / "fineweb_train_*.bin"), None, str(challenge / "fineweb_val_*.bin"), tok)
        docs, val = root / "fineweb" / "fineweb_docs_200_raw.jsonl", root / "fineweb" / "fineweb_val_sp1024_prefix_000000.bin"
        if tok.is_file() and docs.is_file() and val.is_file():
            return DemoData(root, None, docs, str(val), tok)
    if explicit is not None:
        raise DataNotFoundError(f"{explicit}: no golfpack data here.\n{HOW_TO_GET_DATA}")
    raise DataNotFoundError(HOW_TO_GET_DATA)


def run_demo(data: DemoData, out: Path, seconds: float, force: bool, echo: Callable[[str], None]) -> dict:
    from importlib.resources import files

    from ..model.eval_settings import EvalSettings
    from ..trainer.config import load_config
    from ..trainer.tokenize import iter_documents, tokenize_to_shards
    from ..trainer.train import train
    from .build import BuildOptions, build
    from .ledger import format_ledger
    from .run import run_artifact

    out.mkdir(parents=True, exist_ok=True)
    artifact = out / "submission.pyz"
    if artifact.exists() and not force:
        raise FileExistsError(f"{artifact} exists (use --force to redo the demo in {out})")
    train_glob = data.train
    if train_glob is None:
        echo(f"[1/4] tokenizing {data.docs}")
        tokenize_to_shards(iter_documents([data.docs]), data.tokenizer, out / "data", force=force)
        train_glob = str(out / "data" / "fineweb_train_*.bin")
    echo(f"[2/4] training a small model on the CPU for {seconds:.0f}s (data: {data.root})")
    preset = files("golfpack.trainer").joinpath("cpu_small.toml")
    cfg = load_config(str(preset), [f"train_files={train_glob}", f"val_files={data.val}", f"tokenizer={data.tokenizer}",
                                    f"out_dir={out / 'run'}", f"max_wallclock_seconds={seconds}"])
    result = train(cfg, force=force, echo=echo)
    echo("[3/4] building the artifact (default pipeline: GPTQ, bits and clip per matrix filling the budget, ctxans)")
    led = build(result.checkpoint, "default", artifact, BuildOptions(calib=train_glob, force=force), echo=echo)
    echo(format_ledger(led))
    echo("[4/4] verifying and running the artifact")
    r = run_artifact(artifact, data.val, str(data.tokenizer), EvalSettings(cfg.train_seq_len, batch_seqs=64))
    return {**r.to_json(), "float_val_bpb": result.val.val_bpb if result.val else None, "artifact": str(artifact)}
