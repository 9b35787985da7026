"""`pip install .` and `pip install -e .` each work in a fresh virtual environment."""
import subprocess
from pathlib import Path

import pytest

from .conftest import ROOT
from .venv import clean_env, fresh_venv


@pytest.mark.slow
@pytest.mark.parametrize("editable", [False, True])
def test_pip_install_in_fresh_venv(tmp_path, editable):
    py = fresh_venv(tmp_path / "venv")
    env = clean_env()
    probe = subprocess.run([str(py), "-c", "import golfpack.model"], capture_output=True, env=env, cwd=tmp_path)
    assert probe.returncode != 0, "golfpack leaked into the fresh venv before installing"
    target = ["-e", str(ROOT)] if editable else [str(ROOT)]
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", *target],
                   check=True, env=env, cwd=tmp_path, timeout=600)
    out = subprocess.run([str(tmp_path / "venv" / "bin" / "golfpack"), "--help"], capture_output=True, text=True,
                         env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "eval" in out.stdout
    where = subprocess.run([str(py), "-c", "import golfpack.codec, golfpack.trainer; print(golfpack.codec.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, check=True).stdout.strip()
    inside_repo = Path(where).resolve().is_relative_to(ROOT)
    assert inside_repo == editable
