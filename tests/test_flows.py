"""One path each way. Weights -> container is the public ``golfpack.compress`` (a participant's
script; ``build`` and the records script through ``packer/encode.py``'s ``encode_checkpoint``); container -> model is ``runtime/model_file.py``'s
``decode_model`` (an artifact's runtime, the records script's evaluation, ``golfpack eval`` of
a ``.gpak``). Checked by what the entry points actually call, and by the bytes they make."""
import ast
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from golfpack import compress
from golfpack.codec.spec import load_spec
from golfpack.model.checkpoint import load_checkpoint
from golfpack.packer import cli
from golfpack.packer.build import BuildOptions, build
from golfpack.packer.encode import encode_checkpoint
from golfpack.packer.records import script
from golfpack.packer.runtime import commands
from golfpack import CHALLENGE_CAP
from golfpack.packer.runtime.artifact import WEIGHTS, open_artifact, unpack_bundle
from golfpack.packer.runtime.model_file import decode_model
from golfpack.trainer.config import TrainConfig

from .conftest import SP1024

PIPELINE = "blocks.*.weight=gptq bits=5 clip=sdclip:4 -> ans; tok_emb.weight=rtn bits=7 clip=mse -> ans; *=fp16 -> brotli"
PACKER = Path(__file__).resolve().parent.parent / "packer"
FLOWS = ("build.py", "records/script.py", "runtime/commands.py", "cli.py")
# what only the two paths may call: a flow module that calls one of these has grown its own copy
INSIDE_THE_PATHS = {"fill", "encode_state_dict", "complete_hessians", "model_meta", "read_container",
                    "decode_container", "decode_state_dict", "load_weights"}


def reached(fn) -> tuple[set, object]:
    """The code objects called while ``fn`` runs, and its result."""
    codes, out = set(), []

    def profile(frame, event, arg):
        if event == "call":
            codes.add(frame.f_code)

    sys.setprofile(profile)
    try:
        out.append(fn())
    finally:
        sys.setprofile(None)
    return codes, out[0]


@pytest.fixture(scope="module")
def built(trained, tmp_path_factory) -> tuple[Path, set]:
    """An artifact of ``trained``, and what its build called."""
    art = tmp_path_factory.mktemp("flows") / "a.pyz"
    called, _ = reached(lambda: build(trained, PIPELINE, art, BuildOptions(fill=False), echo=lambda m: None,
                                      progress=False))
    return art, called


def test_build_and_the_records_script_encode_by_one_function_to_the_same_bytes(trained, built):
    art, called = built
    assert {encode_checkpoint.__code__, compress.__code__} <= called
    cfg = TrainConfig.from_dict(load_checkpoint(trained).train_config)
    cfg.out_dir = str(Path(trained).parent)
    called, container = reached(lambda: script.encode(cfg, load_spec(PIPELINE), CHALLENGE_CAP, [], lambda m: None))
    assert {encode_checkpoint.__code__, compress.__code__} <= called
    assert open_artifact(art.read_bytes()).members[WEIGHTS] == container


def test_the_runtime_and_eval_of_a_model_file_decode_by_one_function(built, tmp_path, small_val):
    unpacked = open_artifact(built[0].read_bytes())
    files = unpack_bundle(unpacked.manifest, unpacked.members[unpacked.manifest.code["member"]])
    called, (model, _) = reached(lambda: commands.load_model(unpacked, files))
    assert decode_model.__code__ in called
    gpak = tmp_path / "final_model_seed1.gpak"
    gpak.write_bytes(unpacked.members[WEIGHTS])
    called, result = reached(lambda: CliRunner().invoke(cli.main, ["eval", str(gpak), "--val", small_val, "--tokenizer",
                                                                   str(SP1024), "--seq-len", "128", "--json"]))
    assert result.exit_code == 0, result.output
    assert decode_model.__code__ in called


def test_no_flow_module_calls_what_only_the_two_paths_may():
    def calls(rel: str) -> set[str]:  # the functions a module calls by their imported names
        return {n.func.id for n in ast.walk(ast.parse((PACKER / rel).read_text()))
                if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}

    for rel in FLOWS:
        assert not calls(rel) & INSIDE_THE_PATHS, f"packer/{rel} calls {sorted(calls(rel) & INSIDE_THE_PATHS)} itself"
    assert {"encode_checkpoint", "decode_model_file"} <= calls("records/script.py")  # its two directions
