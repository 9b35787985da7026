"""Fresh virtual environments for install tests.

A new venv gets the current environment's third-party packages through a ``.pth`` file (so no
download is needed), but not golfpack itself unless the test installs it.
"""
from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import golfpack.model


def fresh_venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    py = path / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # Third-party packages of this environment, minus any path that provides golfpack.
    ours = Path(golfpack.model.__file__).resolve().parents[1]
    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()}
    lines = [p for p in sorted(paths) if Path(p).is_dir() and Path(p).resolve() != ours]
    Path(purelib, "_parent_env.pth").write_text("\n".join(lines) + "\n")
    return py


def clean_env() -> dict[str, str]:
    """Environment without PYTHONPATH, so only the venv decides what is importable."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
