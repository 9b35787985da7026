"""Trust, round 3: what a reviewer may receive from a stranger (a records folder, an artifact, a
model file, a checkpoint, even a file name) is refused when crafted, by one line and exit
status 1 (check: its report), with no traceback, in at most 1 CPU second of work beyond the
imports and 512 MB, and with nothing it names imported or run (a marker file would show it) and
nothing outside the folder read (a FIFO there would hang the reader)."""
from __future__ import annotations

import json
import lzma
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from golfpack.codec.decoders.base import TensorMeta
from golfpack.codec.decoders.container import write_container
from golfpack.model.builders import GPT_BUILDER
from golfpack.model.checkpoint import Checkpoint, save_checkpoint
from golfpack.model.scoring import EvalSettings
from golfpack.packer.build import build
from golfpack.packer.records.layout import SCRIPT, latin1_literal, parse_script, render_script
from golfpack.packer.runtime.finder import decompress_bundle, pack_bundle, split_bundle

from . import hostile
from .conftest import SP1024, make_tiny
from .hostile import MAX_PEAK_MB, MAX_WORK_CPU_SECONDS, golfpack_measured, refused

@pytest.fixture(scope="module")
def genuine(tmp_path_factory) -> Path:
    """A tiny GPT's checkpoint and its artifact (rowpred and ctxans, so its bundle ships those decoders)."""
    d = tmp_path_factory.mktemp("genuine")
    m = make_tiny(5)
    save_checkpoint(d / "m.pt", Checkpoint(m.state_dict(), m.cfg.to_dict()))
    build(d / "m.pt", "blocks.*.weight=rtn bits=6 -> rowpred -> ctxans; *=fp16 -> brotli", d / "a.pyz",
          echo=lambda _: None, progress=False)
    return d


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def evil_checkpoint(path: Path, builder: str, config: dict, state: dict | None = None) -> Path:
    torch.save({"format": "golfpack.checkpoint", "version": 1, "model_builder": builder, "model_config": config,
                "state_dict": state or {"w": torch.zeros(2)}, "train_config": None, "meta": {}, "resume": None}, path)
    return path


def eval_args(path: Path, val: str) -> list[str]:
    return ["eval", str(path), "--val", val, "--tokenizer", str(SP1024), "--seq-len", "64"]


# -- code runs that nobody agreed to run -----------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("builder", ["subprocess:run", "this:s", "os:system", "builtins:exec"])
def test_a_checkpoint_never_chooses_the_code_that_builds_it(tmp_path, small_val, builder):
    marker = tmp_path / "ran"
    ckpt = evil_checkpoint(tmp_path / "evil.pt", builder, {"args": ["touch", str(marker)], "shell": False})
    for args in (eval_args(ckpt, small_val), ["build", str(ckpt), "--out", str(tmp_path / "x.pyz")]):
        text = refused(golfpack_measured(*args), "names model builder")
        assert builder in text and "Beautiful is better" not in text
    assert not marker.exists()


@pytest.mark.slow
def test_a_file_name_that_reads_as_an_option_is_never_run(genuine, tmp_path, small_val):
    marker = tmp_path / "ran"
    name = "-cimport pathlib;pathlib.Path('ran').write_text('x');print('{}')#.pyz"  # marker in the cwd
    shutil.copy(genuine / "a.pyz", tmp_path / name)
    proc, *_ = golfpack_measured("run", "--val", small_val, "--tokenizer", str(SP1024), "--seq-len", "64", "--json",
                                 "--", name, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["val_bpb"] > 0 and not marker.exists()


@pytest.mark.slow
def test_run_executes_the_bytes_it_verified_not_a_file_swapped_after(genuine, tmp_path, small_val, monkeypatch):
    """The race: the file is replaced between verification and execution (here, right after
    verification, every time). The swapped-in file would leave a marker if it ran."""
    from golfpack.packer import run as run_module

    marker = tmp_path / "ran"
    target = tmp_path / "a.pyz"
    data = (genuine / "a.pyz").read_bytes()
    target.write_bytes(data)
    evil = hostile.zip64_differential(data, f"import pathlib\npathlib.Path({str(marker)!r}).write_text('x')\n".encode())
    verify = run_module.verify_bytes

    def verify_then_swap(path, raw, registry=None):
        v = verify(path, raw, registry)
        target.write_bytes(evil)
        return v

    monkeypatch.setattr(run_module, "verify_bytes", verify_then_swap)
    r = run_module.run_artifact(target, small_val, str(SP1024), EvalSettings(64))
    assert r.sha256 == __import__("hashlib").sha256(data).hexdigest() and r.val_bpb > 0
    assert not marker.exists() and target.read_bytes() == evil


# -- model files and checkpoints: size before allocation, regular files, finite weights ------------

@pytest.mark.slow
@pytest.mark.parametrize("layers", [1000, 200_000])
def test_a_config_larger_than_its_weights_is_refused_before_building(tmp_path, small_val, layers):
    config = {"num_layers": layers, "model_dim": 2048, "num_heads": 16, "num_kv_heads": 4}
    ckpt = evil_checkpoint(tmp_path / "big.pt", GPT_BUILDER, config, {"tok_emb.weight": torch.zeros(2, 2)})
    refused(golfpack_measured(*eval_args(ckpt, small_val)), "its config describes")
    gpak = tmp_path / "big.gpak"
    gpak.write_bytes(write_container([(TensorMeta("tok_emb.weight", "float32", (2, 2)),
                                       [("fp16", {"store": "float16"}, {})], b"\0" * 8)],
                                     {"model_builder": GPT_BUILDER, "model_config": config}))
    print(f"{gpak.stat().st_size} bytes of model file")
    refused(golfpack_measured(*eval_args(gpak, small_val)), "its config describes")


@pytest.mark.slow
def test_weights_that_decode_to_inf_are_refused(genuine, tmp_path, small_val):
    m = make_tiny(5)
    entries = [(TensorMeta(n, "float32", tuple(t.shape)), [("fp16", {"store": "float16"}, {})],
                (torch.full(t.shape, float("inf")) if i == 0 else t).half().numpy().tobytes())
               for i, (n, t) in enumerate(m.state_dict().items())]
    container = write_container(entries, {"model_builder": GPT_BUILDER, "model_config": m.cfg.to_dict()})
    (tmp_path / "inf.gpak").write_bytes(container)
    refused(golfpack_measured(*eval_args(tmp_path / "inf.gpak", small_val)), "decodes to inf or NaN")
    bad = tmp_path / "inf.pyz"
    bad.write_bytes(hostile.with_weights((genuine / "a.pyz").read_bytes(), container))
    direct = subprocess.run([sys.executable, str(bad), "verify"], capture_output=True, text=True, timeout=120)
    assert direct.returncode == 1 and "decodes to inf or NaN" in direct.stderr and "Traceback" not in direct.stderr


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_model_files_artifacts_and_data_must_be_regular_files(genuine, tmp_path, small_val, kind):
    def special(name: str) -> Path:
        p = tmp_path / name
        if kind == "symlink":
            p.symlink_to("/dev/zero")
        else:
            fifo(p)
        return p

    why = "symbolic link" if kind == "symlink" else "not a regular file"
    refused(golfpack_measured(*eval_args(special("m.gpak"), small_val), timeout=30), why)
    refused(golfpack_measured(*eval_args(special("m.pt"), small_val), timeout=30), why)
    refused(golfpack_measured("inspect", str(special("a.pyz")), timeout=30), why)
    if kind == "fifo":  # data may be the user's own symlink; a FIFO never
        val = str(special("val.bin"))
        refused(golfpack_measured(*eval_args(genuine / "m.pt", val), timeout=30), why)
        proc, *_ = golfpack_measured("run", str(genuine / "a.pyz"), "--val", val, "--tokenizer", str(SP1024),
                                     timeout=60)
        assert proc.returncode == 1 and why in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# -- bounded work: inspect, eval and verify ----------------------------------------------------------

def ctxans_flood(tensors: int, cols: int) -> bytes:
    """A valid container of ``tensors`` one-row tensors coded with order-8 row prediction before
    ctxans: each costs a Python-level step per column to decode, and holds almost no bytes."""
    from golfpack.codec.decoders.ctxans import write_tables

    table = write_tables(torch.tensor([[cols]]).numpy())
    chain = [("rtn", {"bits": 6}, {"scales": b"\0\x3c"}), ("rowpred", {"p": 8, "rowwise": 0}, {"coefs": b"\0" * 16}),
             ("ctxans", {"k": 1, "n": 1, "lo": 0}, {"classes": b"", "tables": table})]
    return write_container([(TensorMeta(f"t{i}", "float32", (1, cols)), chain, b"") for i in range(tensors)], {})


@pytest.mark.slow
def test_decoding_work_is_bounded_before_decoding(genuine, tmp_path):
    bad = tmp_path / "flood.pyz"
    bad.write_bytes(hostile.with_weights((genuine / "a.pyz").read_bytes(), ctxans_flood(8, 16384)))
    refused(golfpack_measured("inspect", str(bad)), "steps (refused before decoding")


@pytest.mark.slow
def test_a_flood_of_globs_is_refused(genuine, tmp_path, monkeypatch):
    def edit(manifest, members):
        manifest.pipeline = [{"name": f"r{i}", "match": [f"g{i}.{j}*" for j in range(256)], "chain": "fp16"}
                             for i in range(256)]

    from golfpack.packer.runtime.artifact import Manifest

    bad = tmp_path / "globs.pyz"
    with monkeypatch.context() as m:  # golfpack's writer would refuse to write it: the attacker's does not
        m.setattr(Manifest, "validate", lambda self: None)
        bad.write_bytes(hostile.resealed((genuine / "a.pyz").read_bytes(), edit))
    refused(golfpack_measured("inspect", str(bad)), "more than 1024 globs")


@pytest.mark.slow
def test_a_small_container_with_a_huge_manifest_is_refused(genuine, tmp_path):
    import hashlib

    import brotli

    from golfpack.codec.decoders.container import HEADER

    packed = brotli.compress(b'{"tensors":[' + b"0," * (4 << 20) + b"0]}", quality=5)
    body = HEADER.pack(b"GPAK", 1, b"\0\0\0", len(packed), 0) + packed
    container = body + hashlib.sha256(body).digest()
    print(f"{len(container)}-byte container, 8 MiB manifest")
    bad = tmp_path / "manifest.pyz"
    bad.write_bytes(hostile.with_weights((genuine / "a.pyz").read_bytes(), container))
    refused(golfpack_measured("inspect", str(bad)), "manifest")


# -- records folders: check reads what Python runs, and nothing else --------------------------------

@pytest.fixture
def folder(records, tmp_path) -> Path:
    return Path(shutil.copytree(records, tmp_path / "rec"))


def check(folder: Path, *needles: str, **kwargs) -> str:
    return refused(golfpack_measured("check", str(folder), **kwargs), *needles, stream="stdout")


def bundle_files(folder: Path) -> tuple:
    """The script's parts and its bundle's files (path -> source)."""
    parts = parse_script((folder / SCRIPT).read_bytes())
    raw, _ = decompress_bundle(parts.codec, parts.compressed, 1 << 24)
    return parts, split_bundle(raw, r".+")


def lzma_stream(files: dict) -> bytes:
    return lzma.compress(pack_bundle(files), format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])


def repacked(folder: Path, edit) -> None:
    """``train_gpt.py`` again in canonical shape, its bundle edited by ``edit(files)``."""
    parts, files = bundle_files(folder)
    edit(files)
    (folder / SCRIPT).write_bytes(render_script(parts.version, parts.pipeline, "lzma", lzma_stream(files)))


@pytest.mark.slow
def test_the_genuine_folder_passes(records):
    proc, peak, cpu = golfpack_measured("check", str(records))
    print(proc.stdout, f"peak {peak:.0f} MB, cpu {cpu:.2f} s")
    assert proc.returncode == 0 and cpu <= MAX_WORK_CPU_SECONDS and peak <= MAX_PEAK_MB


@pytest.mark.slow
@pytest.mark.parametrize("line, needle", [
    ("--extra-index-url https://evil.example/simple", "only a distribution name with versions"),
    ("-e git+https://evil.example/x.git#egg=x", "only a distribution name with versions"),
    ("evil-package==1.0", "is not imported by the script's code"),
])
def test_requirements_are_plain_distribution_names_the_script_imports(folder, line, needle):
    (folder / "requirements.txt").write_text((folder / "requirements.txt").read_text() + line + "\n")
    check(folder, needle)


@pytest.mark.slow
def test_a_key_twice_in_submission_json_is_refused(folder):
    """``val_bpb`` twice (0.5, then the real one): ``json.loads`` would keep the last, a reader
    of the file another."""
    text = (folder / "submission.json").read_text()
    (folder / "submission.json").write_text('{"val_bpb": 0.5, ' + text.lstrip()[1:])
    check(folder, "'val_bpb' appears twice")


@pytest.mark.slow
def test_a_bundle_assigned_twice_is_refused(folder):
    lines = (folder / SCRIPT).read_bytes().decode("latin-1").split("\n")
    lines[-3] = f"{lines[-3]};B={latin1_literal(b'evil')}"
    (folder / SCRIPT).write_bytes("\n".join(lines).encode("latin-1"))
    check(folder, "not in the shape golfpack")


@pytest.mark.slow
def test_a_second_compressed_stream_is_refused_and_never_runs(folder):
    """``lzma.decompress`` runs every stream back to back: a reader of the first alone would
    check one bundle while Python ran another."""
    marker = folder.parent / "ran"
    parts, files = bundle_files(folder)
    evil = dict(files) | {"golfpack/packer/records/script.py": f"def main(*a):\n    open({str(marker)!r}, 'w')\n"}
    (folder / SCRIPT).write_bytes(render_script(parts.version, parts.pipeline, "lzma",
                                                lzma_stream(files) + lzma_stream(evil)))
    check(folder, "not exactly one compressed stream")
    ran = subprocess.run([sys.executable, SCRIPT, "--help"], cwd=folder, capture_output=True, text=True, timeout=120)
    assert ran.returncode != 0 and "not exactly one compressed stream" in ran.stderr and not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["torch.pyc", "helper.pyc", "helper/core.py", "notes.txt", "run.sh",
                                  "__pycache__/train_gpt.cpython-311.pyc"])
def test_uncounted_code_beside_the_script_is_refused(folder, name):
    (folder / name).parent.mkdir(exist_ok=True)
    (folder / name).write_text("import os\n")
    top = name.split("/")[0]
    check(folder, f"{top}: a folder" if "/" in name else f"{top}: not a file a records folder holds")


@pytest.mark.slow
def test_a_seed_key_cannot_reach_outside_the_folder(folder):
    fifo(folder.parent / "elsewhere.log")  # reading it would hang
    doc = json.loads((folder / "submission.json").read_text())
    doc["seed_results"]["1/../../elsewhere"] = doc["seed_results"].popitem()[1]
    (folder / "submission.json").write_text(json.dumps(doc))
    check(folder, "seed '1/../../elsewhere' is not a number", timeout=30)


@pytest.mark.slow
def test_file_names_cannot_repaint_the_terminal(folder):
    (folder / "x\r  ok: all fine\x1b[1A\x1b[2K\x1b]0;title\x07.txt").write_text("")
    text = check(folder, "not a file a records folder holds")
    assert not any(c in text for c in "\r\x1b\x07")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_special_files_in_the_folder_are_never_opened(folder, kind):
    (folder / "submission.json").unlink()
    if kind == "symlink":
        (folder / "submission.json").symlink_to("/dev/zero")
    else:
        fifo(folder / "submission.json")
    check(folder, "symbolic link" if kind == "symlink" else "not a regular file", timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("python", [[3, 10**30], ["3", "x"], [3], "3.11"])
def test_a_malformed_target_python_is_a_problem(folder, python):
    doc = json.loads((folder / "submission.json").read_text())
    doc["golfpack"]["python"] = python
    (folder / "submission.json").write_text(json.dumps(doc))
    check(folder, "golfpack.python must be [3, minor]")


@pytest.mark.slow
def test_a_bogus_coding_line_is_a_problem(folder):
    data = (folder / SCRIPT).read_bytes()
    (folder / SCRIPT).write_bytes(data.replace(b"coding: latin-1", b"coding: bogus-9", 1))
    check(folder, "not in the shape golfpack")


@pytest.mark.slow
@pytest.mark.parametrize("module", ["x=" + "-" * 300_000 + "1", "x=" + "(" * 1000 + "1" + ")" * 1000])
def test_a_module_nested_too_deeply_is_a_problem(folder, module):
    repacked(folder, lambda files: files.update({"golfpack/deep.py": module}))
    check(folder, "golfpack/deep.py: does not compile")


@pytest.mark.slow
def test_a_bundle_bomb_is_refused_within_bounds(folder):
    repacked(folder, lambda files: files.update({"golfpack/big.py": "x=1\n" * (2 << 20)}))
    print(f"{(folder / SCRIPT).stat().st_size:,}-byte script")
    check(folder, "decompresses to more than")


# -- a structure-aware fuzzer of the records folder -------------------------------------------------

def _json_values():
    scalar = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                       st.text(max_size=30), st.just("\x1b]0;owned\x07"))
    return st.recursive(scalar, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                        max_leaves=10)


@pytest.mark.slow
@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 40)), deadline=None, database=None,
          derandomize="FUZZ_EXAMPLES" not in os.environ, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_check_of_a_mutated_records_folder_reports_and_never_crashes(records, tmp_path_factory, data):
    """submission.json's fields, the logs' lines and requirements.txt mutated by their structure:
    check either passes the folder or lists its problems, escaped; it never raises, and stays
    within 2 CPU seconds."""
    import time

    from golfpack.packer.records.check import check_folder, format_report

    folder = Path(shutil.copytree(records, tmp_path_factory.mktemp("fz") / "rec"))
    part = data.draw(st.sampled_from(["submission", "log", "requirements"]), label="part")
    if part == "submission":
        doc = json.loads((folder / "submission.json").read_text())
        key = data.draw(st.sampled_from(sorted(doc) + ["extra"]), label="key")
        doc[key] = data.draw(_json_values(), label="value")
        (folder / "submission.json").write_text(json.dumps(doc))
    elif part == "log":
        log = sorted(folder.glob("train_seed*.log"))[0]
        lines = log.read_text().splitlines()
        i = data.draw(st.integers(0, len(lines) - 1), label="line")
        keep = lines[i].split(":")[0]  # the line's own keyword, with a mutated rest: near-miss formats
        lines[i] = keep + data.draw(st.sampled_from([":", " ", ":x", ""]), label="sep") + \
            data.draw(st.text(max_size=40), label="rest")
        log.write_text("\n".join(lines) + "\n")
    else:
        (folder / "requirements.txt").write_text(data.draw(st.text(max_size=200), label="requirements"))
    t0 = time.process_time()
    text = format_report(check_folder(folder))
    assert time.process_time() - t0 < 2.0
    assert "\x1b" not in text and "\x07" not in text
