"""The installed ``golfpack`` command: help, eval output format, tokenize, and clean errors."""
import json
import re
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from golfpack.model.checkpoint import Checkpoint, save_checkpoint
from golfpack.model.shards import read_shard, write_shard
from golfpack.packer.cli import main

from .conftest import CONSOLE_SCRIPT, SP1024, TRAIN_DOCS, VAL_SHARD, golfpack, make_tiny


COMMANDS = [[], ["data"], ["data", "tokenize"], ["eval"], ["stages"], ["train"], ["build"], ["inspect"], ["run"],
            ["demo"]]


def test_installed_console_script_help():
    assert CONSOLE_SCRIPT.is_file(), f"the golfpack console script is not installed beside {sys.executable}"
    out = golfpack("--help", console=True)
    assert out.returncode == 0
    for command in ("eval", "data", "build", "inspect", "run"):
        assert command in out.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "golfpack")
def test_every_help_exits_zero(command):
    out = golfpack(*command, "--help", console=True)
    assert out.returncode == 0 and out.stdout.startswith("Usage:") and out.stderr == "", (out.stdout, out.stderr)


def test_eval_prints_eight_decimals(tmp_path, data_dir):
    model = make_tiny(7)
    save_checkpoint(tmp_path / "m.pt", Checkpoint(model.state_dict(), model.cfg.to_dict()))
    val = tmp_path / "fineweb_val_000000.bin"
    write_shard(val, read_shard(VAL_SHARD)[:4097])
    out = golfpack("eval", str(tmp_path / "m.pt"), "--val", str(tmp_path / "fineweb_val_*.bin"),
                   "--tokenizer", str(SP1024), "--seq-len", "256")
    assert out.returncode == 0, out.stderr
    assert re.search(r"^val_loss:\d+\.\d{8}$", out.stdout, re.M)
    assert re.search(r"^val_bpb:\d+\.\d{8}$", out.stdout, re.M)
    assert "tokens:4096 " in out.stdout
    js = golfpack("eval", str(tmp_path / "m.pt"), "--val", str(val), "--tokenizer", str(SP1024),
                  "--seq-len", "256", "--stride", "128", "--json")
    assert json.loads(js.stdout)["tokens"] == 4096


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "{tmp}/none.pt", "--val", "x", "--tokenizer", str(SP1024)], "no such checkpoint"),
        (["eval", "{tmp}/garbage.pt", "--val", "x", "--tokenizer", str(SP1024)], "not a loadable torch checkpoint"),
        (["eval", "{tmp}/m.pt", "--val", "{tmp}/bad.bin", "--tokenizer", str(SP1024)], "wrong magic"),
        (["eval", "{tmp}/m.pt", "--val", "{tmp}/none_*.bin", "--tokenizer", str(SP1024)], "no shard files match"),
        (["eval", "{tmp}/m.pt", "--val", "{tmp}/bad.bin", "--tokenizer", "{tmp}/none.model"], "no such tokenizer"),
        (["data", "tokenize", "{tmp}/garbage.pt", "--tokenizer", str(SP1024), "--out", "{tmp}/o"], "not UTF-8"),
        (["data", "tokenize", "{tmp}/bad.jsonl", "--tokenizer", str(SP1024), "--out", "{tmp}/o"], "'text' field"),
        (["eval", "{tmp}/m.pt", "--val", "x", "--tokenizer", str(SP1024), "--seq-len", "0"], "--seq-len"),
        (["eval", "{tmp}/m.pt", "--val", "x", "--tokenizer", str(SP1024), "--batch-seqs", "-1"], "--batch-seqs"),
        (["run", "{tmp}/m.pt", "--val", "x", "--tokenizer", str(SP1024), "--stride", "0"], "--stride"),
        (["inspect", "{tmp}/m.pt", "--budget", "0"], "--budget"),
        (["build", "{tmp}/m.pt", "--out", "{tmp}/a.pyz", "--pipeline", "*=fp16 -> brotli level=-3"], "level must be"),
        (["build", "{tmp}/other.pt", "--out", "{tmp}/a.pyz", "--pipeline", "*=fp16 -> zstd"], "do not fit the model"),
        (["build", "{tmp}/m.pt"], "Missing option '--out'"),
        (["submit", "{tmp}/m.pt", "--out", "{tmp}/rec"], "use `golfpack inline`"),  # no run to repeat
        (["eval", "{tmp}/m.pt", "--val", "x", "--tokenizer", "{tmp}/empty.model"], "an empty file"),  # no C++ noise
        (["eval", "{tmp}/zeroheads.pt", "--val", "x", "--tokenizer", str(SP1024)], "0 attention heads"),
        (["nope"], "No such command"),
        (["eval", "{tmp}/m.pt", "--val", "x", "--tokenizer", str(SP1024), "--seq-len", "abc"], "is not a valid integer"),
    ],
)
def test_bad_input_is_one_line_without_traceback(tmp_path, args, message):
    """In process (click's runner): the message. A real process is checked below, once."""
    bad_inputs(tmp_path)
    result = CliRunner().invoke(main, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 1 and (result.exception is None or isinstance(result.exception, SystemExit)), \
        result.exc_info
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_a_real_process_prints_one_line_without_traceback(tmp_path):
    bad_inputs(tmp_path)
    out = golfpack("eval", str(tmp_path / "garbage.pt"), "--val", "x", "--tokenizer", str(SP1024), console=True)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1 and "not a loadable torch checkpoint" in lines[0], out.stderr


def bad_inputs(tmp_path) -> None:
    model = make_tiny(0)
    save_checkpoint(tmp_path / "m.pt", Checkpoint(model.state_dict(), model.cfg.to_dict()))
    (tmp_path / "garbage.pt").write_bytes(b"\xff\xfe not a checkpoint")
    (tmp_path / "bad.bin").write_bytes(b"\0" * 2048)
    (tmp_path / "bad.jsonl").write_text('{"txt": "no text field"}\n')
    state = dict(model.state_dict())
    state["blocks.0.attn.c_q.weight"] = state["blocks.0.attn.c_q.weight"][:, :32]  # a state dict that does not fit
    save_checkpoint(tmp_path / "other.pt", Checkpoint(state, model.cfg.to_dict()))
    (tmp_path / "empty.model").write_bytes(b"")
    torch.save({**model.state_dict(), **{k: torch.zeros(0) for k in model.state_dict() if k.endswith("q_gain")}},
               tmp_path / "zeroheads.pt")


def test_tokenize_writes_challenge_shards(tmp_path, data_dir):
    docs = tmp_path / "docs.jsonl"
    lines = TRAIN_DOCS.read_text(encoding="utf-8").splitlines()[:5]
    docs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = golfpack("data", "tokenize", str(docs), "--tokenizer", str(SP1024), "--out", str(tmp_path / "s"),
                   "--shard-tokens", "3000")
    assert out.returncode == 0, out.stderr
    shards = sorted((tmp_path / "s").glob("fineweb_train_*.bin"))
    tokens = np.concatenate([read_shard(p, 1024) for p in shards])
    assert all(read_shard(p).size == 3000 for p in shards[:-1])
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(SP1024))
    expected = np.concatenate([[1] + sp.encode(json.loads(line)["text"]) for line in lines])
    assert np.array_equal(tokens, expected)
    again = golfpack("data", "tokenize", str(docs), "--tokenizer", str(SP1024), "--out", str(tmp_path / "s"))
    assert again.returncode == 1 and "--force" in again.stderr


def test_the_error_path_shows_terminal_escapes_and_does_not_obey_them(tmp_path):
    """A file name (or a field of a hostile file) quoted in an error reaches the terminal escaped."""
    name = tmp_path / "evil\x1b[2J\rname.pt"
    proc = golfpack("inspect", str(name))
    assert proc.returncode == 1 and "\x1b" not in proc.stderr and "\\x1b[2J\\r" in proc.stderr


def test_build_refuses_validation_data_as_calibration_before_any_work(trained, small_val, tmp_path):
    proc = golfpack("build", str(trained), "--calib", small_val, "--out", str(tmp_path / "a.pyz"))
    assert proc.returncode == 1 and "a validation shard, given as training data" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "a.pyz").exists()


def test_build_refuses_what_needs_no_computation_before_computing(trained, train_glob, tmp_path):
    """A budget the code alone exceeds, and GPTQ with no calibration at all, are refused before
    the calibration runs (a 100 s wait for a newcomer): bounded CPU seconds, not wall time."""
    import resource

    bare = tmp_path / "bare.pt"
    bare.write_bytes(trained.read_bytes())  # no .calib.pt beside this copy
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    tiny = golfpack("build", str(trained), "--budget", "20000", "--calib", train_glob, "--calib-tokens", "1000000",
                    "--out", str(tmp_path / "a.pyz"))
    nocalib = golfpack("build", str(bare), "--out", str(tmp_path / "b.pyz"))
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - before
    assert tiny.returncode == 1 and "the code and structure alone use the whole budget of 20,000" in tiny.stderr
    assert nocalib.returncode == 1 and "no calibration statistics" in nocalib.stderr and "--calib" in nocalib.stderr
    assert "calibrating GPTQ" not in tiny.stderr  # the calibration never started
    print(f"both refusals: {cpu:.1f} CPU s")
    assert cpu < 30



def test_progress_off_a_terminal_is_flushed_phase_lines(capsys, monkeypatch):
    """Where no terminal shows a bar (a pipe, a log file), long work prints a line with its
    count, total and last message at most every PHASE_SECONDS; disabled, nothing."""
    from golfpack.model import console

    monkeypatch.setattr(console, "PHASE_SECONDS", 0.0)
    with console.progress_bar(total=3, desc="fill", unit="step") as bar:
        for i in range(3):
            bar.set_postfix_str(f"estimating t{i}\x1b[2J")
            bar.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and lines[-1].startswith("fill: 3/3 step after ") and "(estimating t2\\x1b[2J)" in lines[-1]
    with console.progress_bar(False, total=3, desc="quiet") as bar:
        bar.update(3)
    monkeypatch.setattr(console, "PHASE_SECONDS", 3600.0)
    with console.progress_bar(total=3, desc="short") as bar:
        bar.update(3)
    assert capsys.readouterr().err == ""  # disabled, or over before the first phase line: silent


def test_cli_runs_in_the_tests_come_from_the_fork_server(monkeypatch):
    """tests/forkserver.py serves golfpack() when the environment is the session's (else the
    suite silently pays torch's import per command), and a process of its own runs a command
    whose environment differs (what Python reads at start cannot change after a fork)."""
    from . import forkserver

    before = forkserver.served
    forked = golfpack("--help")
    assert forked.returncode == 0 and forkserver.served == before + 1
    monkeypatch.setenv("GOLFPACK_FORKSERVER_PROBE", "1")
    fresh = golfpack("--help")
    assert fresh.returncode == 0 and forkserver.served == before + 1
    assert fresh.stdout == forked.stdout and fresh.stderr == forked.stderr == ""
