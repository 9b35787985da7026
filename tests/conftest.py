"""Shared fixtures: the real data in ../shared/data and tiny models."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):  # workers share the cores: one thread each, here and in subprocesses
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)

from golfpack.model import GPT, GPTConfig

from . import forkserver
from .forkserver import run_cli


def pytest_configure(config):
    """One build cache (packer/cache.py) for the run, shared by the xdist workers (they inherit
    the variable) and never the user's own; removed at the end."""
    if not hasattr(config, "workerinput") and "GOLFPACK_CACHE_DIR" not in os.environ:
        config.golfpack_cache = os.environ["GOLFPACK_CACHE_DIR"] = tempfile.mkdtemp(prefix="golfpack-test-cache-")


# The files that take longest, first: xdist (--dist loadfile) hands out files in collection
# order, so the long ones start early and the short ones fill in around them (measured on 2
# cores, 2026-12-06; the order changes only the wall time). test_hostile_inputs.py comes after
# test_records.py has had time to make the shared records folder it also needs.
SLOW_FIRST = ("test_models_tutorial.py", "test_fill.py", "test_records.py", "test_packer.py", "test_trainer.py",
              "test_hostile_inputs.py", "test_bench_rd.py", "test_container_fuzz.py", "test_inline.py", "test_api.py",
              "test_hostile.py", "test_install.py", "test_plugin.py", "test_cli.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # stable: a file's own order is kept


def pytest_unconfigure(config):
    if getattr(config, "golfpack_cache", None):
        shutil.rmtree(config.golfpack_cache, ignore_errors=True)

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


@pytest.fixture(scope="session", autouse=True)
def fork_server_environment() -> None:
    forkserver.start()


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


def once_per_run(tmp_path_factory, name: str, make: Callable[[], str]) -> str:
    """A session fixture's value (a path) made once for the whole run, however many xdist
    workers ask for it (the first makes it under a file lock, the others read its path): the
    slow ones (the records folder: a submit of two seeds) then cost once, not once a worker.
    Tests copy what they change, as they did when each worker had its own."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the run's own folder
    done = root / f"{name}.path"
    with FileLock(str(done) + ".lock"):
        if not done.is_file():
            done.write_text(make())
        return done.read_text()


@pytest.fixture(scope="session")
def train_glob(tmp_path_factory, data_dir) -> str:
    """The 200 shared FineWeb training documents as challenge shards."""
    from golfpack.trainer.tokenize import iter_documents, tokenize_to_shards

    def make() -> str:
        out = tmp_path_factory.mktemp("shards")
        tokenize_to_shards(iter_documents([TRAIN_DOCS]), SP1024, out)
        return str(out / "fineweb_train_*.bin")

    return once_per_run(tmp_path_factory, "train_glob", make)


@pytest.fixture(scope="session")
def small_val(tmp_path_factory, data_dir) -> str:
    """The first 8,193 validation tokens as a shard: quick to score."""
    from golfpack.model.shards import read_shard, write_shard

    def make() -> str:
        path = tmp_path_factory.mktemp("val") / "fineweb_val_000000.bin"
        write_shard(path, read_shard(VAL_SHARD)[:8193])
        return str(path)

    return once_per_run(tmp_path_factory, "small_val", make)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, train_glob, small_val) -> Path:
    """A tiny model trained for a few steps, with GPTQ calibration beside its checkpoint."""
    return Path(once_per_run(tmp_path_factory, "trained", lambda: str(_train_tiny(tmp_path_factory, train_glob, small_val))))


def _train_tiny(tmp_path_factory, train_glob: str, small_val: str) -> Path:
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
    """The CLI as a user runs it: ``python -m golfpack.packer`` (forked from the worker's fork
    server where the environment allows, tests/forkserver.py), or the installed console script."""
    if console:
        return subprocess.run([str(CONSOLE_SCRIPT), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=900)
    return run_cli(list(args), env=env, cwd=cwd)


def data_args(train_glob: str, small_val: str) -> list[str]:
    return ["--train", train_glob, "--val", small_val, "--tokenizer", str(SP1024)]


@pytest.fixture(scope="session")
def records(tmp_path_factory, trained, train_glob, small_val) -> Path:
    def make() -> str:
        out = tmp_path_factory.mktemp("records") / "rec"
        proc = golfpack("submit", str(trained), "--out", str(out), "--seeds", ",".join(SEEDS), "--name", "tiny test",
                        *RECORDS_QAT, *data_args(train_glob, small_val))
        assert proc.returncode == 0, proc.stderr[-2000:]
        return str(out)

    return Path(once_per_run(tmp_path_factory, "records", make))
