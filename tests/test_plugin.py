"""The plugin tutorial in docs/stages.md, built and installed out of tree, used in a pipeline."""
import os
import re
import subprocess
import sys
import textwrap

import pytest

from golfpack.model.checkpoint import Checkpoint, save_checkpoint

from .conftest import ROOT, make_tiny


def tutorial_files() -> dict[str, str]:
    text = (ROOT / "docs" / "stages.md").read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", text, re.S)
    assert {"pyproject.toml", "golfpack_xor/encoders/xor.py", "golfpack_xor/decoders/xor.py"} <= {p for p, _ in blocks}
    return dict(blocks)


ROUND_TRIP = textwrap.dedent("""
    import torch
    from golfpack.codec.host import decode_state_dict
    from golfpack.codec.pipeline import encode_state_dict
    from golfpack.codec.decoders.container import read_container
    from golfpack.codec.spec import load_spec
    t = torch.randn(40, 24)
    spec = load_spec("*=fp32 -> xor key=7 -> zstd")
    data = encode_state_dict({"w": t}, spec)
    out, _ = decode_state_dict(data)
    assert torch.equal(out["w"], t)
    chain = [r.stage for r in read_container(data).entries[0].chain]
    assert chain == ["fp32", "xor", "zstd"], chain
    plain = encode_state_dict({"w": t}, load_spec("*=fp32 -> zstd"))
    print("ok", len(data), len(plain))
""")


@pytest.mark.slow
def test_out_of_tree_plugin_round_trips(tmp_path):
    src = tmp_path / "golfpack-xor"
    for rel, body in tutorial_files().items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(body)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--target", str(target), str(src)], check=True, timeout=600)
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", ROUND_TRIP], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")
    listing = subprocess.run([sys.executable, "-m", "golfpack.packer", "stages"], capture_output=True, text=True,
                             env=env, check=True).stdout
    line = next(ln for ln in listing.splitlines() if ln.startswith("xor "))
    assert "bytes -> bytes" in line and "key=90" in line and "plugin golfpack-xor" in line
    # An artifact that uses the stage carries its decoder: it runs where the plugin is not installed.
    model = make_tiny(2)
    save_checkpoint(tmp_path / "m.pt", Checkpoint(model.state_dict(), model.cfg.to_dict()))
    art = tmp_path / "xor.pyz"
    built = subprocess.run([sys.executable, "-m", "golfpack.packer", "build", str(tmp_path / "m.pt"), "--out", str(art),
                            "--pipeline", "blocks.*=rtn bits=6 -> pack -> xor key=7 -> zstd; *=fp16 -> brotli"],
                           capture_output=True, text=True, env=env)
    assert built.returncode == 0, built.stderr
    ran = subprocess.run([sys.executable, str(art), "verify"], capture_output=True, text=True, cwd=tmp_path)
    assert ran.returncode == 0 and ran.stdout.startswith("ok"), ran.stderr
    # golfpack itself refuses to read it without the plugin: it imports no decoder an artifact names.
    refused = subprocess.run([sys.executable, "-m", "golfpack.packer", "inspect", str(art)], capture_output=True,
                             text=True)
    assert refused.returncode == 1 and "stage 'xor' is not installed here" in refused.stderr
    # Without the plugin on the path, the stage is unknown: a clear error.
    bad = subprocess.run([sys.executable, "-m", "golfpack.packer", "stages", "--check", "fp32 -> xor -> zstd"],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "unknown stage 'xor'" in bad.stderr


def test_a_broken_plugin_does_not_take_golfpack_down(tmp_path):
    """An installed entry point whose module does not import: listed as broken, and only a
    pipeline that names it fails, with the reason."""
    dist = tmp_path / "golfpack_broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: golfpack-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[golfpack.stages]\nbroken = no_such_module.encoders.x:Stage\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    listing = subprocess.run([sys.executable, "-m", "golfpack.packer", "stages"], capture_output=True, text=True,
                             env=env)
    assert listing.returncode == 0 and "BROKEN" in listing.stdout and "ans " in listing.stdout
    ok = subprocess.run([sys.executable, "-m", "golfpack.packer", "stages", "--check", "fp32 -> zstd"],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([sys.executable, "-m", "golfpack.packer", "stages", "--check", "fp32 -> broken"],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and "failed to load: ModuleNotFoundError" in bad.stderr
