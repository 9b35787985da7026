"""Records folders: `golfpack submit` runs its own train_gpt.py for two seeds, `golfpack check`
re-derives every number, the script also runs under torchrun, and check refuses crafted
folders (a seed over the cap, a JSON that disagrees with its log, an uncounted local import,
a decompression bomb)."""
from __future__ import annotations

import json
import lzma
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from golfpack.packer.records.check import check_folder
from golfpack.packer.records.lines import parse_log
from golfpack.packer.records.layout import latin1_literal
from golfpack import CHALLENGE_CAP

from .conftest import RECORDS_QAT, SEEDS, SP1024, data_args, golfpack



def copy_records(records: Path, dest: Path) -> Path:
    shutil.copytree(records, dest)
    return dest


def full_score(log: Path) -> float:
    return parse_log(log.read_text(), str(log)).val_bpb


def eval_model_file(path: Path, small_val: str) -> float:
    proc = golfpack("eval", str(path), "--val", small_val, "--tokenizer", str(SP1024), "--seq-len", "128", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["val_bpb"]


def test_check_passes_and_counted_bytes_are_the_files(records):
    proc = golfpack("check", str(records))
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout
    doc = json.loads((records / "submission.json").read_text())
    code = (records / "train_gpt.py").stat().st_size
    assert set(doc["seed_results"]) == set(SEEDS) and doc["bytes_code"] == code
    for seed, r in doc["seed_results"].items():
        model = (records / f"final_model_seed{seed}.gpak").stat().st_size
        assert (r["code_bytes"], r["model_bytes"], r["artifact_bytes"]) == (code, model, code + model)
    assert doc["bytes_total"] == max(r["artifact_bytes"] for r in doc["seed_results"].values())
    assert (records / "requirements.txt").read_text().split() == doc["golfpack"]["requirements"]
    assert "torch" in doc["golfpack"]["requirements"] and "python-minifier" not in doc["golfpack"]["requirements"]
    log = (records / f"train_seed{SEEDS[0]}.log").read_text()
    assert '"calib_reserve_seconds": 4.0' in log and re.search(r"calibration:.* train_plus_calib_time:[0-9]+ms", log)
    # the fill's closed-loop tokens are training data: read by the calibration inside the clock, none after it
    calibration = re.search(r"^calibration:.* score_tokens:([0-9]+) calib_time:", log, re.M)
    assert calibration and int(calibration[1]) > 0, log
    assert log.index("closed loop: contenders scored on") < calibration.start() < log.index("fill: chosen:"), log
    # budget-aware QAT (packed with --set qat_budget): planned for the cap less this script's own bytes
    assert re.search(rf"^qat:plan 1/1 step:\d+ budget:{CHALLENGE_CAP - code} predicted_bytes:\d+ ", log, re.M), log
    readme = (records / "README.md").read_text()
    assert f"{doc['val_bpb']:.8f}" in readme and f"{doc['bytes_total']:,}" in readme


def test_final_score_is_golfpack_eval_of_the_model_file(records, small_val):
    for seed in SEEDS:
        logged = full_score(records / f"train_seed{seed}.log")
        evaluated = eval_model_file(records / f"final_model_seed{seed}.gpak", small_val)
        print(f"seed {seed}: log {logged!r}, golfpack eval {evaluated!r}")
        assert abs(logged - evaluated) <= 1e-9


def test_the_script_runs_under_torchrun_with_two_processes(records, tmp_path, train_glob, small_val):
    folder = copy_records(records, tmp_path / "rec")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train_gpt.py",
           f"train_files={train_glob}", f"val_files={small_val}", f"tokenizer={SP1024}"]
    proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "RUN_ID": "ddp", "SEED": "7"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (folder / "train_ddp.log").read_text()
    assert "world_size:2" in log and "ranks_in_sync:true" in log
    logged, evaluated = full_score(folder / "train_ddp.log"), eval_model_file(folder / "final_model_ddp.gpak", small_val)
    print(f"torchrun x2: log {logged!r}, golfpack eval {evaluated!r}")
    assert abs(logged - evaluated) <= 1e-9


def test_the_script_is_deterministic_and_refuses_to_clobber(records, trained, tmp_path, train_glob, small_val):
    for d in ("a", "b"):
        proc = golfpack("submit", str(trained), "--out", str(tmp_path / d), "--seeds", ",".join(SEEDS), "--script-only",
                        *RECORDS_QAT, *data_args(train_glob, small_val))
        assert proc.returncode == 0, proc.stderr
    script = (records / "train_gpt.py").read_bytes()
    assert (tmp_path / "a" / "train_gpt.py").read_bytes() == (tmp_path / "b" / "train_gpt.py").read_bytes() == script
    again = golfpack("submit", str(trained), "--out", str(tmp_path / "a"), "--script-only")
    assert again.returncode == 1 and "not empty" in again.stderr and "Traceback" not in again.stderr


def test_the_script_ships_only_what_it_runs(records):
    from golfpack.packer.records.check import bundle_of

    files = bundle_of((records / "train_gpt.py").read_bytes())
    assert "golfpack/packer/records/script.py" in files and "golfpack/codec/encoders/ctxans.py" in files
    build_side = [p for p in files if p.startswith("golfpack/packer/") and not p.startswith(("golfpack/packer/records/",
                                                                                          "golfpack/packer/runtime/"))]
    assert build_side == ["golfpack/packer/__init__.py", "golfpack/packer/encode.py"]  # build's own encode path
    assert not {"golfpack/packer/records/submit.py", "golfpack/packer/records/check.py"} & set(files)
    assert "golfpack/codec/encoders/zstd.py" not in files  # the default pipeline does not use it


def script_lines(folder: Path) -> list[str]:
    """train_gpt.py's lines: Latin-1, split at "\n" only (its bundle literal holds \x85 and friends)."""
    return (folder / "train_gpt.py").read_bytes().decode("latin-1").rstrip("\n").split("\n")


def write_script(folder: Path, lines: list[str]) -> None:
    (folder / "train_gpt.py").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))


def rewrite(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def test_check_refuses_a_second_seed_one_byte_over_the_cap(records, tmp_path):
    import hashlib

    folder = copy_records(records, tmp_path / "rec")
    seed = SEEDS[1]
    log, model = folder / f"train_seed{seed}.log", folder / f"final_model_seed{seed}.gpak"
    before = parse_log(log.read_text(), "log")
    padded = CHALLENGE_CAP + 1 - before.code_bytes
    model.write_bytes(model.read_bytes().ljust(padded, b"\0"))
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    rewrite(log, f"golfpack: {before.model_bytes} bytes ({model.name} sha256:{before.model_sha256})",
            f"golfpack: {padded} bytes ({model.name} sha256:{sha})")
    rewrite(log, f"Total submission size golfpack: {before.artifact_bytes} bytes",
            f"Total submission size golfpack: {CHALLENGE_CAP + 1} bytes")
    doc = json.loads((folder / "submission.json").read_text())
    doc["seed_results"][seed].update(model_bytes=padded, artifact_bytes=CHALLENGE_CAP + 1)
    doc["bytes_total"] = CHALLENGE_CAP + 1
    (folder / "submission.json").write_text(json.dumps(doc))
    report = check_folder(folder)
    print(report.problems)
    assert report.problems == [f"seed {seed}: 16,000,001 bytes, 1 over the cap of 16,000,000"]
    assert golfpack("check", str(folder)).returncode == 1


def test_check_refuses_json_that_disagrees_with_its_log(records, tmp_path):
    folder = copy_records(records, tmp_path / "rec")
    doc = json.loads((folder / "submission.json").read_text())
    doc["seed_results"][SEEDS[0]]["val_bpb"] -= 1e-6
    (folder / "submission.json").write_text(json.dumps(doc))
    report = check_folder(folder)
    print(report.problems)
    assert len(report.problems) == 1 and re.match(rf"seed {SEEDS[0]}: submission.json says val_bpb .*, the log",
                                                  report.problems[0])
    (folder / f"train_seed{SEEDS[1]}.log").rename(folder / "train_seed99.log")
    problems = check_folder(folder).problems
    assert any("leaves out" in p for p in problems) and any(f"no log for seed {SEEDS[1]}" in p for p in problems)


def test_check_refuses_an_uncounted_local_import_and_native_code(records, tmp_path):
    folder = copy_records(records, tmp_path / "rec")
    (folder / "helper.py").write_text("X = 1\n")
    lines = script_lines(folder)
    lines.insert(len(lines) - 2, "import helper")
    write_script(folder, lines)
    problems = check_folder(folder).problems
    print(problems)
    assert any(p.startswith("train_gpt.py: train_gpt.py is not in the shape golfpack") for p in problems)
    assert any(p.startswith("helper.py: not a file a records folder holds (code outside train_gpt.py") for p in problems)
    (folder / "kernel.cu").write_text("// fast\n")
    assert any(p.startswith("kernel.cu: not a file a records folder holds") for p in check_folder(folder).problems)


def test_check_bounds_a_crafted_bundle(records, tmp_path):
    folder = copy_records(records, tmp_path / "rec")
    bomb = lzma.compress(b"\0" * (9 << 20), format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
    lines = script_lines(folder)
    lines[-2] = f"B={latin1_literal(bomb)}"
    lines[-1] = re.sub(r"start\(B,'\w+'", "start(B,'lzma'", lines[-1])
    write_script(folder, lines)
    problems = check_folder(folder).problems
    assert any("decompresses to more than 524,288 bytes" in p for p in problems), problems
    lines[-2] = "B='not a bundle'"
    write_script(folder, lines)
    assert any("does not decompress" in p for p in check_folder(folder).problems)


def test_the_scripts_config_is_packed_then_environment_then_arguments():
    from golfpack.packer.records.script import resolve_config
    from golfpack.trainer.config import TrainConfig

    settings = {"train_config": TrainConfig().to_dict() | {"seed": 3, "iterations": 9}}
    cfg, run_id = resolve_config(settings, [], {})
    assert (cfg.seed, cfg.iterations, run_id, cfg.log_file) == (3, 9, "seed3", "train_seed3.log")
    cfg, run_id = resolve_config(settings, ["iterations=5"], {"SEED": "7", "ITERATIONS": "8", "DATA_PATH": "/d",
                                                              "TOKENIZER_PATH": "/t.model", "RUN_ID": "0f3a-b"})
    assert (cfg.seed, cfg.iterations, run_id) == (7, 5, "0f3a-b")
    assert (cfg.train_files, cfg.val_files, cfg.tokenizer) == ("/d/fineweb_train_*.bin", "/d/fineweb_val_*.bin", "/t.model")
    for bad in ("../x", "a/b", ".hidden", ""):
        with pytest.raises(ValueError, match="RUN_ID"):
            resolve_config(settings, [], {"RUN_ID": bad})


def test_the_script_says_how_to_run_it(records):
    """Its help is a string the minifier keeps (it once printed None: the docstring was dropped)."""
    proc = subprocess.run([sys.executable, "train_gpt.py", "--help"], cwd=records, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python train_gpt.py") and "RUN_ID" in proc.stdout
    checked = golfpack("check", str(records))
    assert "modules of golfpack; not golfpack's (review them): none" in checked.stdout  # golfpack's GPT: all its own
