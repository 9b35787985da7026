"""Shared fixtures: the real data in ../shared/data and tiny models."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):  # workers share the cores: one thread each, here and in subprocesses
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)

from golfpack.model import GPT, GPTConfig

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
VAL_SHARD = DATA / "fineweb" / "fineweb_val_sp1024_prefix_000000.bin"
VAL_DOCS = DATA / "fineweb" / "fineweb_val_first901docs_spnorm.jsonl"
TRAIN_DOCS = DATA / "fineweb" / "fineweb_docs_200_raw.jsonl"
SP1024 = DATA / "tokenizers" / "fineweb_1024_bpe.model"
CONSOLE_SCRIPT = Path(sys.executable).parent / "golfpack"  # installed beside the interpreter, on PATH or not

SEEDS = ("1337", "42")  # the records fixture's seeds
# ... and its budget-aware QAT (the script plans for its own budget, whatever qat_budget says)
RECORDS_QAT = ("--set", "qat_budget=1", "--set", "qat_start_frac=0.5", "--set", "qat_calib_tokens=1024")
TINY = GPTConfig(num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not VAL_SHARD.is_file():
        pytest.skip(f"shared data not found at {DATA}")
    return DATA


def make_tiny(seed: int = 0, cfg: GPTConfig = TINY) -> GPT:
    """A tiny GPT with random (not zero) weights everywhere, so every tensor matters."""
    torch.manual_seed(seed)
    model = GPT(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and "resid_mix" not in name:
                p.normal_(0, 0.5 / p.shape[1] ** 0.5 if "tok_emb" not in name else 0.3)
    return model


@pytest.fixture
def tiny_model() -> GPT:
    return make_tiny()


@pytest.fixture(scope="session")
def train_glob(tmp_path_factory, data_dir) -> str:
    """The 200 shared FineWeb training documents as challenge shards."""
    from golfpack.trainer.tokenize import iter_documents, tokenize_to_shards

    out = tmp_path_factory.mktemp("shards")
    tokenize_to_shards(iter_documents([TRAIN_DOCS]), SP1024, out)
    return str(out / "fineweb_train_*.bin")


@pytest.fixture(scope="session")
def small_val(tmp_path_factory, data_dir) -> str:
    """The first 8,193 validation tokens as a shard: quick to score."""
    from golfpack.model.shards import read_shard, write_shard

    path = tmp_path_factory.mktemp("val") / "fineweb_val_000000.bin"
    write_shard(path, read_shard(VAL_SHARD)[:8193])
    return str(path)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, train_glob, small_val):
    """A tiny model trained for a few steps, with GPTQ calibration beside its checkpoint."""
    from golfpack.trainer.config import load_config
    from golfpack.trainer.train import train

    out = tmp_path_factory.mktemp("run")
    cfg = load_config(None, ["model.num_layers=2", "model.model_dim=64", "model.num_heads=4", "model.num_kv_heads=2",
                             "train_seq_len=128", "train_batch_tokens=2048", "iterations=8", "warmdown_iters=3",
                             "val_loss_every=0", "device=cpu", "calib_tokens=2048", f"train_files={train_glob}",
                             f"val_files={small_val}", f"tokenizer={SP1024}", f"out_dir={out}"])
    result = train(cfg, echo=lambda m: None)
    assert result.calib is not None and result.calib.is_file()
    return result.checkpoint


def golfpack(*args: str, cwd: Path | None = None, env: dict | None = None,
             console: bool = False) -> subprocess.CompletedProcess:
    """The CLI in a fresh process: ``python -m golfpack.packer``, or the installed console script."""
    cmd = [str(CONSOLE_SCRIPT)] if console else [sys.executable, "-m", "golfpack.packer"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=900)


def data_args(train_glob: str, small_val: str) -> list[str]:
    return ["--train", train_glob, "--val", small_val, "--tokenizer", str(SP1024)]


@pytest.fixture(scope="session")
def records(tmp_path_factory, trained, train_glob, small_val) -> Path:
    out = tmp_path_factory.mktemp("records") / "rec"
    proc = golfpack("submit", str(trained), "--out", str(out), "--seeds", ",".join(SEEDS), "--name", "tiny test",
                    *RECORDS_QAT, *data_args(train_glob, small_val))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out
