"""Packer: build -> inspect -> run, the artifact alone in a fresh venv, determinism, budget,
no clobber, tampering, malformed zips."""
import json
import subprocess
import sys

import pytest
import torch

from golfpack.codec.host import decode_state_dict
from golfpack.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from golfpack.packer.runtime.artifact import ArtifactError, read_zip
from golfpack.packer.verify import verify_artifact
from golfpack.packer.build import build
from golfpack.packer.run import run_artifact
from golfpack.model.scoring import EvalSettings

from .conftest import SP1024
from .test_cli import golfpack
from .venv import clean_env, fresh_venv

PIPELINE = "blocks.*.weight=gptq bits=5 clip=sdclip:4 -> ans; tok_emb.weight=rtn bits=7 clip=mse -> ans; *=fp16 -> brotli"
EVAL = ["--seq-len", "128", "--batch-seqs", "16"]


@pytest.fixture(scope="module")
def artifact(trained, tmp_path_factory):
    path = tmp_path_factory.mktemp("art") / "submission.pyz"
    build(trained, PIPELINE, path, echo=lambda m: None, progress=False)
    return path


def test_build_inspect_run_matches_eval_of_round_tripped_checkpoint(artifact, trained, small_val, tmp_path):
    art = verify_artifact(artifact)
    assert art.size == artifact.stat().st_size
    ins = golfpack("inspect", str(artifact), "--json")
    assert ins.returncode == 0, ins.stderr
    led = json.loads(ins.stdout)
    assert led["total"] == art.size and led["headroom"] == 16_000_000 - art.size
    assert {t["name"] for t in led["tensors"]} == set(load_checkpoint(trained).state_dict)
    parts = led["zip_overhead"] + led["bootstrap"] + led["manifest"] + led["code_compressed"] + led["weights"]
    assert parts == artifact.stat().st_size, "the ledger must account for every byte"
    assert led["container_overhead"] + sum(t["bytes"] for t in led["tensors"]) == led["weights"]
    assert {t["class"] for t in led["tensors"]} == {"blocks.*.weight", "tok_emb.weight", "*"}
    text = golfpack("inspect", str(artifact), "--plot", str(tmp_path / "b.png"))
    assert text.returncode == 0 and "headroom" in text.stdout and (tmp_path / "b.png").stat().st_size > 1000

    run = golfpack("run", str(artifact), "--val", small_val, "--tokenizer", str(SP1024), *EVAL, "--json")
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    # Reference: golfpack eval of the checkpoint after the same quantization round trip.
    state, meta = decode_state_dict(art.art.members["weights.gpak"])
    ck = load_checkpoint(trained)
    save_checkpoint(tmp_path / "rt.pt", Checkpoint(state, ck.model_config))
    ref = golfpack("eval", str(tmp_path / "rt.pt"), "--val", small_val, "--tokenizer", str(SP1024), *EVAL, "--json")
    expected = json.loads(ref.stdout)
    print(f"run val_bpb={got['val_bpb']:.10f} eval-after-round-trip val_bpb={expected['val_bpb']:.10f}")
    assert abs(got["val_bpb"] - expected["val_bpb"]) <= 1e-9 * expected["val_bpb"]
    assert got["artifact_bytes"] == art.size
    pretty = golfpack("run", str(artifact), "--val", small_val, "--tokenizer", str(SP1024), *EVAL)
    assert f"val_bpb:{got['val_bpb']:.8f}" in pretty.stdout and "within the 600s limit" in pretty.stdout
    assert "decode_time:" in pretty.stdout and "% of the limit" in pretty.stdout


def test_quantization_changes_weights_but_not_much(artifact, trained, small_val):
    state, _ = decode_state_dict(verify_artifact(artifact).art.members["weights.gpak"])
    ck = load_checkpoint(trained)
    w = ck.state_dict["blocks.0.mlp.fc.weight"]
    assert not torch.equal(state["blocks.0.mlp.fc.weight"], w)
    assert torch.allclose(state["blocks.0.attn_scale"], ck.state_dict["blocks.0.attn_scale"], atol=1e-3)



def test_inspect_measures_against_the_budget_the_artifact_was_built_for(artifact, trained, tmp_path):
    from golfpack.packer.build import BuildOptions

    budget = artifact.stat().st_size + 12_345
    out = tmp_path / "tight.pyz"
    build(trained, PIPELINE, out, BuildOptions(budget=budget), echo=lambda m: None, progress=False)
    assert verify_artifact(out).manifest.budget == budget
    led = json.loads(golfpack("inspect", str(out), "--json").stdout)
    assert led["budget"] == budget and led["headroom"] == budget - out.stat().st_size
    again = json.loads(golfpack("inspect", str(out), "--json", "--budget", "16000000").stdout)
    assert again["headroom"] == 16_000_000 - out.stat().st_size


def test_over_budget_writes_nothing_and_shows_ledger(trained, tmp_path):
    out = tmp_path / "big.pyz"
    proc = golfpack("build", str(trained), "--pipeline", PIPELINE, "--out", str(out), "--budget", "50000")
    assert proc.returncode == 1 and not out.exists()
    assert "over the budget of 50,000" in proc.stderr and "OVER BUDGET" in proc.stderr
    assert list(tmp_path.iterdir()) == [], "no temporary files left behind"


def test_no_clobber_without_force(trained, tmp_path):
    out = tmp_path / "s.pyz"
    out.write_bytes(b"precious")
    proc = golfpack("build", str(trained), "--pipeline", PIPELINE, "--out", str(out))
    assert proc.returncode == 1 and "--force" in proc.stderr and out.read_bytes() == b"precious"
    forced = golfpack("build", str(trained), "--pipeline", PIPELINE, "--out", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert out.read_bytes()[:2] == b"PK"


def test_gptq_without_calibration_is_a_clear_error(trained, tmp_path):
    bare = tmp_path / "bare.pt"
    bare.write_bytes(trained.read_bytes())  # no .calib.pt beside this copy
    proc = golfpack("build", str(bare), "--pipeline", "default", "--out", str(tmp_path / "x.pyz"))
    assert proc.returncode == 1 and "no calibration statistics" in proc.stderr


def _tamper(src, dst, member: str) -> None:
    """Flip one bit in the middle of ``member``'s data, leaving every header as it was."""
    data = bytearray(src.read_bytes())
    members, _ = read_zip(bytes(data))
    pos = 0
    for name, blob in members:
        pos += 30 + len(name)
        if name == member:
            data[pos + len(blob) // 2] ^= 0x01
            break
        pos += len(blob)
    dst.write_bytes(bytes(data))


@pytest.mark.parametrize("member", ["code.brotli|code.lzma", "weights.gpak", "manifest.json", "__main__.py"])
def test_tampered_artifacts_are_rejected_before_execution(artifact, tmp_path, small_val, member):
    names = [n for n, _ in read_zip(artifact.read_bytes())[0]]
    target = next(n for n in names if n in member.split("|"))
    bad = tmp_path / "bad.pyz"
    _tamper(artifact, bad, target)
    with pytest.raises(ArtifactError):
        verify_artifact(bad)
    proc = golfpack("run", str(bad), "--val", small_val, "--tokenizer", str(SP1024))
    assert proc.returncode == 1 and "golfpack: error:" in proc.stderr and "val_bpb" not in proc.stdout
    assert golfpack("inspect", str(bad)).returncode == 1
    if target != "__main__.py":  # the bootstrap itself refuses too, before unpacking any code
        direct = subprocess.run([sys.executable, str(bad), "verify"], capture_output=True, text=True)
        assert direct.returncode != 0 and direct.stderr.startswith("golfpack artifact:"), direct.stderr


@pytest.mark.parametrize("content", [
    b"", b"not a zip at all", b"PK\x05\x06" + b"\0" * 18,
    "deflated", "foreign", "truncated",
])
def test_inspect_refuses_malformed_zips_cleanly(artifact, tmp_path, content):
    bad = tmp_path / "bad.pyz"
    import zipfile

    if content == "deflated":
        with zipfile.ZipFile(bad, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr("manifest.json", "{}" * 1000)
    elif content == "foreign":
        with zipfile.ZipFile(bad, "w") as z:
            z.writestr("hello.txt", "hi")
    elif content == "truncated":
        bad.write_bytes(artifact.read_bytes()[: artifact.stat().st_size // 2])
    else:
        bad.write_bytes(content)
    proc = golfpack("inspect", str(bad))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_artifact_runs_and_retrains_in_fresh_venv_without_golfpack(artifact, tmp_path, small_val, train_glob):
    py = fresh_venv(tmp_path / "venv")
    env = clean_env()
    probe = subprocess.run([str(py), "-c", "import golfpack"], capture_output=True, cwd=tmp_path, env=env)
    assert probe.returncode != 0, "golfpack must not be importable in the fresh venv"
    out = subprocess.run([str(py), str(artifact), "eval", "--val", small_val, "--tokenizer", str(SP1024), *EVAL,
                          "--json"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    expected = run_artifact(artifact, small_val, str(SP1024), EvalSettings(128, batch_seqs=16))
    assert json.loads(out.stdout)["val_bpb"] == expected.val_bpb
    retrain = subprocess.run([str(py), str(artifact), "train", f"out_dir={tmp_path / 'again'}", "iterations=2",
                              f"train_files={train_glob}", f"val_files={small_val}", f"tokenizer={SP1024}",
                              "calib_tokens=0"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert retrain.returncode == 0, retrain.stderr
    assert "step:2/2 val_loss:" in retrain.stdout and (tmp_path / "again" / "final.pt").is_file()
    verify = subprocess.run([str(py), str(artifact), "verify"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert verify.returncode == 0 and verify.stdout.startswith("ok: hashes verified")


def test_build_accepts_the_challenges_plain_state_dict(trained, tmp_path):
    plain = tmp_path / "final_model.pt"
    torch.save(load_checkpoint(trained).state_dict, plain)
    out = tmp_path / "plain.pyz"
    led = build(plain, "blocks.*=rtn bits=6 -> ans; *=fp16 -> zstd", out, echo=lambda m: None, progress=False)
    assert out.stat().st_size == led.total and verify_artifact(out).manifest.train_config is None


@pytest.mark.slow
def test_run_with_two_processes_matches_one(artifact, small_val):
    one = run_artifact(artifact, small_val, str(SP1024), EvalSettings(128, 64), nproc=1)
    two = run_artifact(artifact, small_val, str(SP1024), EvalSettings(128, 64), nproc=2)
    assert two.world_size == 2 and two.tokens == one.tokens and two.bytes == one.bytes
    assert abs(two.val_bpb - one.val_bpb) <= 1e-12 * one.val_bpb


def test_artifact_refuses_an_older_python_than_it_was_built_with(artifact, tmp_path):
    from golfpack.packer.runtime.artifact import write_artifact

    v = verify_artifact(artifact)
    assert v.manifest.python == list(sys.version_info[:2])
    v.manifest.python = [sys.version_info[0], 99]
    future = tmp_path / "future.pyz"
    future.write_bytes(write_artifact([(n, v.art.members[n]) for n in v.art.order[:3]], v.manifest))
    proc = subprocess.run([sys.executable, str(future), "verify"], capture_output=True, text=True)
    assert proc.returncode == 1 and f"built with Python {sys.version_info[0]}.99" in proc.stderr


def test_artifact_runs_without_tqdm(artifact, tmp_path, small_val):
    """A progress bar is never a reason an artifact fails: tqdm is optional, and recorded so."""
    block = tmp_path / "block" / "tqdm"
    block.mkdir(parents=True)
    (block / "__init__.py").write_text("raise ImportError('tqdm is not installed here')\n")
    env = {**clean_env(), "PYTHONPATH": str(block.parent)}
    out = subprocess.run([sys.executable, str(artifact), "eval", "--val", small_val, "--tokenizer", str(SP1024), *EVAL],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "val_bpb:" in out.stdout
    assert verify_artifact(artifact).manifest.requirements["optional"] == ["tqdm"]


def test_inspect_reads_a_model_file_and_names_a_checkpoint_for_what_it_is(artifact, trained, tmp_path):
    """A records folder's model file gets the same per-tensor ledger; a checkpoint is not
    reported as a tampered artifact; --plot's dependency is checked before any work."""
    from golfpack.packer.runtime.artifact import WEIGHTS, open_artifact

    gpak = tmp_path / "final_model_seed1.gpak"
    gpak.write_bytes(open_artifact(artifact.read_bytes()).members[WEIGHTS])
    proc = golfpack("inspect", str(gpak), "--json")
    assert proc.returncode == 0, proc.stderr
    led = json.loads(proc.stdout)
    assert led["kind"] == "model file" and led["total"] == gpak.stat().st_size and led["tensors"]
    assert sum(t["bytes"] for t in led["tensors"]) + led["container_overhead"] == led["total"]
    text = golfpack("inspect", str(gpak)).stdout
    assert text.startswith("model file ") and "bootstrap" not in text and "the script beside it counts" in text
    ckpt = golfpack("inspect", str(trained))
    assert ckpt.returncode == 1 and "a PyTorch checkpoint" in ckpt.stderr and "golfpack build" in ckpt.stderr
    assert "tamper" not in ckpt.stderr and "not a golfpack artifact" not in ckpt.stderr
