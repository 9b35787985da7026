"""The artifact is hostile input: every attack below is refused by ``golfpack inspect`` and
``golfpack run`` before any of the artifact's code runs, with one line and exit status 1, in
bounded memory (peak RSS measured against inspecting a genuine artifact)."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from golfpack.model.checkpoint import Checkpoint, save_checkpoint
from golfpack.packer.build import build
from golfpack.packer.runtime.artifact import BOOTSTRAP, MAX_ARTIFACT_BYTES, read_zip

from . import hostile
from .hostile import golfpack_measured
from .conftest import SP1024, make_tiny

PIPELINE = "blocks.*.weight=rtn bits=6 -> ans; *=fp16 -> brotli"
MEMORY_SLACK_MB = 64  # an attack may cost at most this much more peak memory than a genuine inspect


def evil_main(marker) -> bytes:
    """A hidden ``__main__.py`` that leaves ``marker`` and prints a score of its choosing."""
    return f"import pathlib\npathlib.Path({str(marker)!r}).write_text('pwned')\nprint('{{\"val_bpb\": 0.1}}')\n".encode()


class Artifact(bytes):
    """An artifact's bytes, shown short (hypothesis prints the arguments of a failing example)."""

    def __repr__(self) -> str:
        return f"<artifact, {len(self):,} bytes>"


@pytest.fixture(scope="module")
def genuine(tmp_path_factory) -> bytes:
    d = tmp_path_factory.mktemp("genuine")
    m = make_tiny(3)
    save_checkpoint(d / "m.pt", Checkpoint(m.state_dict(), m.cfg.to_dict()))
    build(d / "m.pt", PIPELINE, d / "a.pyz", echo=lambda _: None, progress=False)
    return Artifact((d / "a.pyz").read_bytes())


@pytest.fixture(scope="module")
def sentinel_dir(tmp_path_factory):
    """A module that, if anything ever imports it, leaves a file behind."""
    d = tmp_path_factory.mktemp("sentinel")
    (d / "sentinel_mod.py").write_text(textwrap.dedent(f"""
        import pathlib
        pathlib.Path({str(d / 'IMPORTED')!r}).write_text('imported')
        def decode(value, params, blobs, meta):
            return value
    """))
    return d


@pytest.fixture(scope="module")
def baseline_mb(genuine, tmp_path_factory) -> float:
    p = tmp_path_factory.mktemp("base") / "a.pyz"
    p.write_bytes(genuine)
    proc, peak, _ = golfpack_measured("inspect", str(p))
    assert proc.returncode == 0, proc.stderr
    print(f"genuine inspect: peak {peak:.0f} MB")
    return peak


def refused(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("golfpack: error:") and "Traceback" not in proc.stderr, proc.stderr
    assert any(n in lines[0] for n in needles), lines[0]


def run_args(path) -> list[str]:
    return ["run", str(path), "--val", "never-read.bin", "--tokenizer", str(SP1024), "--seq-len", "64"]


@pytest.mark.parametrize("variant", ["swap", "extra"])
def test_decoder_table_injection_is_refused_and_nothing_is_imported(genuine, sentinel_dir, tmp_path, variant):
    def edit(manifest, members):
        if variant == "swap":  # golfpack's own stage name, pointed at the attacker's module
            manifest.decoders["fp16"] = ["sentinel_mod", "tensor", "bytes"]
        else:  # a stage golfpack does not have
            manifest.decoders["evil"] = ["sentinel_mod", "bytes", "bytes"]

    bad = tmp_path / "bad.pyz"
    bad.write_bytes(hostile.resealed(genuine, edit))
    env = {**os.environ, "PYTHONPATH": str(sentinel_dir)}
    for args in (["inspect", str(bad)], ["inspect", str(bad), "--json"], run_args(bad)):
        proc, *_ = golfpack_measured(*args, env=env)
        refused(proc, "decoder table")
    # The bootstrap, run directly, refuses too: its decoders must come from its own bundle.
    direct = subprocess.run([sys.executable, str(bad), "verify"], capture_output=True, text=True, env=env)
    assert direct.returncode != 0 and "golfpack artifact:" in direct.stderr
    assert not (sentinel_dir / "IMPORTED").exists(), "an artifact-named module was imported"


def test_zip64_second_directory_differential_is_refused_before_execution(genuine, tmp_path):
    import zipfile

    marker = tmp_path / "ran"
    bad = tmp_path / "bad.pyz"
    bad.write_bytes(hostile.zip64_differential(genuine, evil_main(marker)))
    # The attack is real: zipfile sees the genuine bootstrap, `python bad.pyz` runs the hidden one.
    assert zipfile.ZipFile(bad).read(BOOTSTRAP) == read_zip(genuine)[0][0][1]
    subprocess.run([sys.executable, str(bad)], capture_output=True, timeout=60)
    assert marker.read_text() == "pwned"
    marker.unlink()
    for args in (["inspect", str(bad)], run_args(bad)):
        proc, *_ = golfpack_measured(*args)
        refused(proc, "canonical zip layout")
    assert not marker.exists(), "golfpack run executed the hidden __main__.py"


@pytest.mark.parametrize("edit", ["prepend", "append", "shebang"])
def test_bytes_before_or_after_the_artifact_are_refused(genuine, tmp_path, edit):
    data = {"prepend": b"\0" * 64 + genuine, "append": genuine + b"trailing", "shebang": b"#!/usr/bin/env python3\n" + genuine}[edit]
    bad = tmp_path / "bad.pyz"
    bad.write_bytes(data)
    for args in (["inspect", str(bad)], run_args(bad)):
        proc, *_ = golfpack_measured(*args)
        refused(proc, "canonical zip layout", "no zip member at offset 0")
    direct = subprocess.run([sys.executable, str(bad), "verify"], capture_output=True, text=True)
    assert direct.returncode != 0


@pytest.mark.parametrize("attack", ["overlapping members", "directory flood"])
def test_zip_structure_attacks_are_refused_in_bounded_memory(genuine, tmp_path, baseline_mb, attack):
    """Overlapping members (one stored blob listed 20,000 times) and a 200,000-entry central
    directory: both once cost a naive reader gigabytes."""
    craft = {"overlapping members": lambda: hostile.overlapping(genuine, 20_000),
             "directory flood": lambda: hostile.directory_flood(genuine, 200_000)}[attack]
    bad = tmp_path / "bad.pyz"
    bad.write_bytes(craft())
    proc, peak, _ = golfpack_measured("inspect", str(bad))
    print(f"{attack} ({bad.stat().st_size:,} bytes): peak {peak:.0f} MB vs genuine {baseline_mb:.0f} MB")
    refused(proc, "canonical zip layout")
    assert peak < baseline_mb + MEMORY_SLACK_MB


def test_a_file_far_beyond_any_budget_is_refused_before_reading(tmp_path, baseline_mb):
    bad = tmp_path / "huge.pyz"
    with open(bad, "wb") as f:  # sparse: large on paper, nothing to read
        f.truncate(MAX_ARTIFACT_BYTES + 1)
    proc, peak, _ = golfpack_measured("inspect", str(bad))
    refused(proc, "larger than any artifact")
    assert peak < baseline_mb + MEMORY_SLACK_MB


def test_decoder_amplification_is_refused_in_bounded_memory(genuine, tmp_path, baseline_mb):
    container = hostile.amplifying_container(numel=1 << 24, tensors=8)
    bad = tmp_path / "bad.pyz"
    bad.write_bytes(hostile.with_weights(genuine, container))
    proc, peak, _ = golfpack_measured("inspect", str(bad))
    print(f"amplifying container ({len(container):,} bytes declaring {8 << 24:,} elements): peak {peak:.0f} MB")
    refused(proc, "elements declared")
    assert peak < baseline_mb + MEMORY_SLACK_MB


def test_amplification_within_the_bound_decodes_in_bounded_memory(genuine, tmp_path, baseline_mb):
    """A container at the edge of what its size allows still decodes within the stated bound:
    64 elements per container byte plus 2**20, at most 8 bytes each in one tensor at a time."""
    container = hostile.amplifying_container(numel=1 << 20, tensors=1)
    bad = tmp_path / "edge.pyz"
    bad.write_bytes(hostile.with_weights(genuine, container))
    proc, peak, _ = golfpack_measured("inspect", str(bad), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["params"] == 1 << 20
    assert peak < baseline_mb + MEMORY_SLACK_MB


def test_run_treats_the_artifacts_printed_result_as_untrusted(genuine, tmp_path):
    from golfpack.packer.run import parse_result

    good = {"val_loss": 1.0, "val_bpb": 1.5, "tokens": 10, "bytes": 20, "seconds": 0.5, "wall_seconds": 1.0,
            "world_size": 1, "decode_seconds": 0.1}
    assert parse_result("noise\n" + json.dumps(good))["val_bpb"] == 1.5
    for printed in ["{}", "[1, 2]", "{not json", json.dumps({**good, "val_bpb": "1.5"}),
                    json.dumps({**good, "tokens": 1.5}), json.dumps({**good, "val_loss": float("nan")}), ""]:
        with pytest.raises(RuntimeError, match="result"):
            parse_result(printed)


def test_control_characters_in_names_never_reach_the_terminal(genuine, tmp_path):
    """A tensor name with an escape sequence is refused by the container reader; a path with one
    is printed escaped."""
    weird = tmp_path / "a\x1b[2Jb.pyz"
    weird.write_bytes(genuine)
    proc, *_ = golfpack_measured("inspect", str(weird))
    assert proc.returncode == 0 and "\x1b" not in proc.stdout and "\\x1b[2J" in proc.stdout


DECODER_ENTRIES = st.one_of(
    st.tuples(st.sampled_from(["sentinel_mod", "os", "numpy", "this", "golfpack.codec.decoders.ans",
                               "golfpack.codec.decoders.intq", "golfpack.codec.encoders.ans", "golfpack.codec.spec"]),
              st.sampled_from(["tensor", "symbols", "bytes", "TENSOR", ""]),
              st.sampled_from(["tensor", "symbols", "bytes"])).map(list),
    st.lists(st.text(max_size=6), max_size=4), st.none(), st.integers(), st.text(max_size=20),
)


@pytest.mark.slow
@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
@given(data=st.data())
def test_inspect_of_fuzzed_manifests_and_decoder_tables_only_refuses(genuine, sentinel_dir, data):
    """Mutated manifests, decoder tables included, resealed so only the parser stands in the way:
    inspect's checks and ledger raise nothing but ArtifactError and import nothing named."""
    from golfpack.packer.ledger import artifact_ledger
    from golfpack.packer.runtime.artifact import (COMMENT_PREFIX, MANIFEST, ArtifactError, write_zip)
    from golfpack.packer.verify import verify_bytes

    from .test_container_fuzz import NASTY, paths

    members, _ = read_zip(genuine)
    doc = json.loads(dict(members)[MANIFEST])
    for _ in range(data.draw(st.integers(1, 3))):
        if isinstance(doc.get("decoders"), dict) and data.draw(st.booleans()):
            stage = data.draw(st.sampled_from(["fp16", "rtn", "ans", "brotli", "evil", "__init__", "a.b"]))
            doc["decoders"][stage] = copy.deepcopy(data.draw(DECODER_ENTRIES))
        else:
            path = data.draw(st.sampled_from([p for p in paths(doc) if p]))
            target = doc
            for p in path[:-1]:
                target = target[p]
            target[path[-1]] = copy.deepcopy(data.draw(NASTY))  # st.just() shares one object
    raw = json.dumps(doc).encode()
    blob = write_zip([*[(n, d) for n, d in members if n != MANIFEST], (MANIFEST, raw)],
                     COMMENT_PREFIX + hashlib.sha256(raw).hexdigest().encode())
    sys.path.insert(0, str(sentinel_dir))
    try:
        artifact_ledger(verify_bytes(sentinel_dir / "x.pyz", blob), 16_000_000)
    except ArtifactError:
        pass
    finally:
        sys.path.remove(str(sentinel_dir))
    assert "sentinel_mod" not in sys.modules and not (sentinel_dir / "IMPORTED").exists()


def test_a_model_builder_named_by_the_container_is_never_imported(genuine, sentinel_dir, tmp_path):
    """The container's meta names the model builder; an attacker points it at their module.
    inspect only shows the name, the artifact refuses a builder outside its own bundle, and
    `golfpack eval` of a model file refuses any builder it was not given."""
    bad = tmp_path / "bad.pyz"
    bad.write_bytes(hostile.with_meta(genuine, lambda meta: meta.update(model_builder="sentinel_mod:decode")))
    env = {**os.environ, "PYTHONPATH": str(sentinel_dir)}
    shown, *_ = golfpack_measured("inspect", str(bad), env=env)
    assert shown.returncode == 0 and "model            sentinel_mod:decode" in shown.stdout, shown.stderr
    direct = subprocess.run([sys.executable, str(bad), "verify"], capture_output=True, text=True, env=env)
    assert direct.returncode == 1 and "'sentinel_mod' is not in the artifact's own bundle" in direct.stderr
    ran, *_ = golfpack_measured(*run_args(bad), env=env)
    refused(ran, "not in the artifact's own bundle")
    gpak = tmp_path / "model.gpak"
    members, _ = hostile.read_zip(bad.read_bytes())
    gpak.write_bytes(dict(members)["weights.gpak"])
    proc, *_ = golfpack_measured("eval", str(gpak), "--val", "never-read.bin", "--tokenizer", str(SP1024), env=env)
    refused(proc, "built by 'sentinel_mod:decode', not by golfpack.model.gpt:build")
    assert not (sentinel_dir / "IMPORTED").exists(), "a container-named model module was imported"


def test_run_relays_the_artifacts_stderr_escaped_and_bounded():
    """What an artifact prints while it runs reaches our stderr line by line, each line escaped and
    cut; a flood on stdout or an endless line neither blocks the child nor fills our memory."""
    import io
    from contextlib import redirect_stderr

    from golfpack.trainer.launch import MAX_LINE_CHARS, MAX_RESULT_BYTES, relay

    child = textwrap.dedent('''\
        import sys
        sys.stdout.write("x" * (4 << 20))
        sys.stdout.flush()
        print("eval: 3/10 win after 10s", file=sys.stderr, flush=True)
        print("\\x1b]0;owned\\x07bell", file=sys.stderr, flush=True)
        print("eval: 4/10 win after 20s (\\x1b[2J)", file=sys.stderr, flush=True)
        print("y" * (1 << 20), file=sys.stderr, flush=True)
        sys.exit(3)
        ''')
    err = io.StringIO()
    with redirect_stderr(err):
        code, out, tail = relay([sys.executable, "-c", child], echo=True)
    assert code == 3 and len(out) == MAX_RESULT_BYTES
    # phase lines only, escaped; anything else is at most the one line of the error
    assert err.getvalue() == "eval: 3/10 win after 10s\neval: 4/10 win after 20s (\\x1b[2J)\n"
    assert len(tail) == MAX_LINE_CHARS and set(tail) == {"y"}
    quiet = io.StringIO()
    with redirect_stderr(quiet):
        assert relay([sys.executable, "-c", child], echo=False)[0] == 3
    assert quiet.getvalue() == ""
