"""The model tutorial in docs/models.md, run as written: a depth-recurrent model with other
parameter names trains, builds, inspects and runs through the CLI, its artifact runs in a venv
without golfpack; roles pick its rules; and a model module that would not ship is refused."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from golfpack.codec.spec import load_spec
from golfpack.model.anatomy import ModelBuilderError
from golfpack.trainer.roles import tensor_roles
from golfpack.model.builders import build_model, load_module_file
from golfpack.model.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from golfpack.packer.bundle import BundleError, build_bundle

from .conftest import ROOT, SP1024, golfpack, make_tiny
from .venv import clean_env, fresh_venv


def tutorial_files() -> dict[str, str]:
    text = (ROOT / "docs" / "models.md").read_text(encoding="utf-8")
    return dict(re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", text, re.S))


def golfpack_ok(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = golfpack(*args, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def loop_lm(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tutorial")
    for name, body in tutorial_files().items():
        (folder / name).write_text(body)
    return folder


def test_roles_fit_names_the_pipeline_has_never_seen(loop_lm):
    name = load_module_file(loop_lm / "loop_lm.py")
    model = build_model(f"{name}:build", {"dim": 256})
    roles = tensor_roles(model)
    assert roles["embed.weight"] == "embedding" and roles["mixers.1.out.weight"] == "matrix"
    assert roles["mixers.0.gate"] == roles["loop_scale"] == "small"
    spec = load_spec("default").with_roles(roles)
    assert {spec.rule_for(n).label for n in roles} == {"matrices", "embedding", "control"}
    assert spec.chosen_by_role(list(roles)) == {n: 0 if r == "matrix" else 1 for n, r in roles.items() if r != "small"}
    gpt = make_tiny(0)  # 64 wide: a matrix of any size is a matrix, and the default names no tensor
    gpt_roles = tensor_roles(gpt)
    assert gpt_roles["blocks.0.attn.c_k.weight"] == "matrix" and gpt_roles["tok_emb.weight"] == "embedding"
    assert load_spec("default").with_roles(gpt_roles).chosen_by_role(list(gpt_roles)) == \
        {n: 0 if r == "matrix" else 1 for n, r in gpt_roles.items() if r != "small"}
    inline = load_spec("role:small=fp16 -> zstd; *=rtn bits=4 -> ans").with_roles(roles)
    assert inline.rule_for("loop_scale").stages[0].name == "fp16" and inline.rule_for("embed.weight").label == "*"


@pytest.mark.slow
def test_tutorial_model_trains_builds_inspects_runs_and_ships(loop_lm, train_glob, small_val):
    d = loop_lm
    golfpack_ok("train", "--model", "loop_lm.py:build", "--train", train_glob, "--val", small_val, "--tokenizer",
             str(SP1024), "--out", "run", "--iterations", "4", "--calib-tokens", "2048", "--device", "cpu",
             "--pipeline", "default", "--qat-start", "0.5", "--set", "train_seq_len=128",
             "--set", "train_batch_tokens=2048", "--set", "val_loss_every=0", "--set", "sens_tokens=4096",
             "--set", "score_tokens=0", cwd=d)  # no closed loop in its records script: the suite stays fast, the
    # flow is the tutorial's (the loop has tests of its own: test_loss_aware.py, test_records.py)
    log = (d / "run" / "train.log").read_text()
    assert re.search(r"qat:on step:2 .*quantized_weights:9$", log, re.M), log  # 8 CastedLinears + the tied embedding
    golfpack_ok("build", "run/final.pt", "--model", "loop_lm.py:build", "--out", "loop.pyz", "--score-tokens", "0",
                cwd=d)
    ledger = json.loads(golfpack_ok("inspect", "loop.pyz", "--json", cwd=d).stdout)
    groups = dict(zip([t["name"] for t in ledger["tensors"]], ledger["groups"]))
    assert groups["mixers.0.qkv.weight"] == "matrices" and groups["embed.weight"] == "embedding"
    assert groups["loop_scale"] == "control"
    ran = json.loads(golfpack_ok("run", "loop.pyz", "--val", small_val, "--tokenizer", str(SP1024), "--seq-len", "128",
                              "--json", cwd=d).stdout)
    floated = json.loads(golfpack_ok("eval", "run/final.pt", "--model", "loop_lm.py:build", "--val", small_val,
                                  "--tokenizer", str(SP1024), "--seq-len", "128", "--json", cwd=d).stdout)
    print(f"LoopLM: float val_bpb {floated['val_bpb']:.6f}, artifact {ran['artifact_bytes']:,} bytes, "
          f"run {ran['val_bpb']:.6f}")
    assert abs(ran["val_bpb"] - floated["val_bpb"]) < 0.01
    # Its records folder: LoopLM's module packed in train_gpt.py, run for a seed, checked.
    golfpack_ok("submit", "run/final.pt", "--model", "loop_lm.py:build", "--out", "records", "--seeds", "5", cwd=d)
    assert "check passed" in golfpack_ok("check", "records", cwd=d).stdout
    assert "loop_lm:build" in (d / "records" / "README.md").read_text()
    # The artifact needs neither golfpack nor loop_lm.py: a venv without golfpack, another folder.
    away = d / "elsewhere"
    away.mkdir()
    (d / "loop.pyz").rename(away / "loop.pyz")
    py = fresh_venv(d / "venv")
    out = subprocess.run([str(py), "loop.pyz", "eval", "--val", small_val, "--tokenizer", str(SP1024), "--seq-len", "128",
                          "--json"], capture_output=True, text=True, cwd=away, env=clean_env(), timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.splitlines()[-1])["val_bpb"] == ran["val_bpb"]
    wrong = golfpack("build", "../run/final.pt", "--out", "x.pyz", cwd=d / "elsewhere")
    assert wrong.returncode == 1 and "pass --model" in wrong.stderr, wrong.stderr


def test_a_model_module_that_would_not_ship_is_refused(tmp_path):
    (tmp_path / "sibling_helper.py").write_text("K = 2\n")
    (tmp_path / "leaky_model.py").write_text("import sibling_helper\nfrom golfpack.model.gpt import build\n")
    sys.path.insert(0, str(tmp_path))
    try:
        name = load_module_file(tmp_path / "leaky_model.py")
        with pytest.raises(BundleError, match="model module 'leaky_model' imports 'sibling_helper'"):
            build_bundle([], [name])
    finally:
        sys.path.remove(str(tmp_path))
    (tmp_path / "json.py").write_text("")
    with pytest.raises(ModelBuilderError, match="is taken by|would shadow"):
        load_module_file(tmp_path / "json.py")
    (tmp_path / "not_a_model.py").write_text("import torch\ndef build(c):\n    return torch.nn.Linear(2, 2)\n")
    with pytest.raises(ModelBuilderError, match="lacks"):
        build_model(f"{load_module_file(tmp_path / 'not_a_model.py')}:build", {})


def test_entry_point_and_a_plain_state_dict_of_your_model(loop_lm, tmp_path):
    dist = tmp_path / "loop_lm_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: loop-lm-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[golfpack.models]\nloop-lm = loop_lm:build\n")
    (tmp_path / "loop_lm.py").write_text((loop_lm / "loop_lm.py").read_text())
    code = "from golfpack.packer.models import resolve_model; print(resolve_model('loop-lm'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**clean_env(), "PYTHONPATH": str(tmp_path)})
    assert out.returncode == 0 and out.stdout.strip() == "loop_lm:build", out.stderr
    # A state dict saved outside golfpack: taken as the named builder's model, with its defaults.
    name = load_module_file(loop_lm / "loop_lm.py")
    ref = f"{name}:build"
    torch.save(build_model(ref, {}).state_dict(), tmp_path / "plain.pt")
    ckpt = load_checkpoint(tmp_path / "plain.pt", ref)
    assert ckpt.model_builder == ref and ckpt.model_config["dim"] == 256
    assert tensor_roles(ckpt.build_model())["embed.weight"] == "embedding"
    gpt = make_tiny(1)
    save_checkpoint(tmp_path / "gpt.pt", Checkpoint(gpt.state_dict(), gpt.cfg.to_dict()))
    with pytest.raises(CheckpointError, match="trained with model builder 'golfpack.model.gpt:build'"):
        load_checkpoint(tmp_path / "gpt.pt", ref)


def test_a_plain_state_dict_takes_its_config_from_set(loop_lm, small_val, tmp_path):
    """A plain state dict with --model starts from the module's DEFAULT_CONFIG; the mismatch
    says how to fix it, and --set model.KEY=VALUE fixes it (eval and build alike)."""
    name = load_module_file(loop_lm / "loop_lm.py")
    model = build_model(f"{name}:build", {"dim": 64, "heads": 2})
    plain = tmp_path / "plain.pt"
    torch.save(model.state_dict(), plain)
    args = ["--model", str(loop_lm / "loop_lm.py:build"), "--val", small_val, "--tokenizer", str(SP1024),
            "--seq-len", "64", "--json"]
    bare = golfpack("eval", str(plain), *args, cwd=loop_lm)
    assert bare.returncode == 1 and "--set model.KEY=VALUE" in bare.stderr and "Traceback" not in bare.stderr
    fixed = golfpack("eval", str(plain), *args, "--set", "model.dim=64", "--set", "model.heads=2", cwd=loop_lm)
    assert fixed.returncode == 0, fixed.stderr
    assert json.loads(fixed.stdout)["val_bpb"] > 0
    built = golfpack("build", str(plain), "--model", str(loop_lm / "loop_lm.py:build"), "--set", "model.dim=64",
                     "--set", "model.heads=2", "--pipeline", "*=fp16 -> zstd", "--out", str(tmp_path / "a.pyz"),
                     cwd=loop_lm)
    assert built.returncode == 0, built.stderr
    ckpt = tmp_path / "ckpt.pt"
    save_checkpoint(ckpt, Checkpoint(model.state_dict(), {**model.cfg}, model_builder=f"{name}:build"))
    refused = golfpack("eval", str(ckpt), *args, "--set", "model.dim=64", cwd=loop_lm)
    assert refused.returncode == 1 and "records its own" in refused.stderr
