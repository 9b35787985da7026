"""`pip install .` and `pip install -e .` each work in a fresh virtual environment: the console
script builds, inspects and runs an artifact from the installed package, not the source tree."""
import json
import subprocess
from pathlib import Path

import pytest

from golfpack.model.checkpoint import Checkpoint, save_checkpoint

from .conftest import ROOT, SP1024, make_tiny
from .venv import clean_env, fresh_venv

PIPELINE = "blocks.*.weight=rtn bits=6 -> ans; *=fp16 -> brotli"


@pytest.mark.slow
@pytest.mark.parametrize("editable", [False, True])
def test_pip_install_in_fresh_venv_builds_inspects_and_runs(tmp_path, small_val, editable):
    py = fresh_venv(tmp_path / "venv")
    env = clean_env()
    probe = subprocess.run([str(py), "-c", "import golfpack.model"], capture_output=True, env=env, cwd=tmp_path)
    assert probe.returncode != 0, "golfpack leaked into the fresh venv before installing"
    target = ["-e", str(ROOT)] if editable else [str(ROOT)]
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", *target],
                   check=True, env=env, cwd=tmp_path, timeout=600)
    where = subprocess.run([str(py), "-c", "import golfpack.codec.decoders.ans as m; print(m.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, check=True).stdout.strip()
    assert Path(where).resolve().is_relative_to(ROOT) == editable
    api = subprocess.run([str(py), "-c", "import golfpack; print(golfpack.__file__, callable(golfpack.compress))"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, check=True).stdout.split()
    assert Path(api[0]).resolve().is_relative_to(ROOT) == editable and api[1] == "True"  # the public API installs too

    exe = tmp_path / "venv" / "bin" / "golfpack"
    model = make_tiny(5)
    save_checkpoint(tmp_path / "m.pt", Checkpoint(model.state_dict(), model.cfg.to_dict()))

    def cli(*args: str) -> subprocess.CompletedProcess:
        out = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
        assert out.returncode == 0, out.stderr
        return out

    for command in ([], ["build"], ["inspect"], ["run"], ["stages"], ["train"], ["demo"], ["inline"]):
        assert cli(*command, "--help").stdout.startswith("Usage:")
    assert "your code" in cli("inline", str(ROOT / "tests" / "participant" / "train_gpt.py"), "--out", "rec").stdout
    cli("build", "m.pt", "--pipeline", PIPELINE, "--out", "a.pyz")
    ledger = json.loads(cli("inspect", "a.pyz", "--json").stdout)
    assert ledger["total"] == (tmp_path / "a.pyz").stat().st_size
    result = json.loads(cli("run", "a.pyz", "--val", small_val, "--tokenizer", str(SP1024), "--seq-len", "128",
                            "--json").stdout)
    assert result["tokens"] == 8192 and result["artifact_bytes"] == ledger["total"]
