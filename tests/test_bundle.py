"""The code bundle ships what the artifact imports, and decoders import only what they may."""
import dataclasses
import sys
import textwrap
import types

import pytest

from golfpack.codec.decoders.chain import DecoderSpec
from golfpack.codec.registry import decoder_table
from golfpack.packer.bundle import BundleError, build_bundle, minify


def _decoder_module(tmp_path, monkeypatch, body: str) -> DecoderSpec:
    pkg = tmp_path / f"plug_{abs(hash(body)) % 10**8}"
    (pkg / "decoders").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "decoders" / "__init__.py").write_text("")
    (pkg / "decoders" / "my.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    return DecoderSpec(f"{pkg.name}.decoders.my", "bytes", "bytes")


def test_bundle_holds_core_and_only_the_used_decoders():
    table = decoder_table()
    bundle = build_bundle([table["rtn"], table["ans"], table["fp16"], table["zstd"]])
    files = set(bundle.files)
    assert {"golfpack/codec/decoders/ans.py", "golfpack/codec/decoders/floats.py", "golfpack/model/gpt.py",
            "golfpack/packer/runtime/__init__.py", "golfpack/packer/runtime/commands.py",
            "golfpack/trainer/train.py"} <= files
    assert "golfpack/codec/decoders/pack.py" not in files and "golfpack/codec/spec.py" not in files
    assert "golfpack/packer/cli.py" not in files and "golfpack/codec/encoders/ans.py" not in files
    assert "golfpack/packer/runtime/artifact.py" not in files, "the bootstrap inlines the format module"
    assert bundle.minified_bytes < bundle.raw_bytes and len(bundle.compressed) < bundle.minified_bytes
    assert "torch" in bundle.required and "tqdm" in bundle.optional and "click" not in bundle.required


@pytest.mark.parametrize("imports, message", [
    ("import click", "decoder module 'plug_\\d+.decoders.my' imports 'click'"),
    ("from golfpack.codec.spec import load_spec", "imports 'golfpack.codec.spec', which is build-side code"),
    ("def later():\n    from golfpack.codec.registry import discover", "imports 'golfpack.codec.registry'"),
])
def test_decoder_with_a_disallowed_import_is_refused(tmp_path, monkeypatch, imports, message):
    spec = _decoder_module(tmp_path, monkeypatch, imports + "\ndef decode(data, params, blobs, meta):\n    return data\n")
    with pytest.raises(BundleError, match=message):
        build_bundle([spec])


def test_decoder_allowed_imports_pass(tmp_path, monkeypatch):
    spec = _decoder_module(tmp_path, monkeypatch, """
        import lzma
        import numpy as np
        from golfpack.codec.decoders import base
        from golfpack.codec.decoders.base import DecodeError
        def decode(data, params, blobs, meta):
            return data
    """)
    assert f"{spec.module.replace('.', '/')}.py" in build_bundle([spec]).files


def test_minify_keeps_dataclass_semantics():
    src = textwrap.dedent('''
        """Doc."""
        from __future__ import annotations
        from dataclasses import dataclass, field
        from typing import ClassVar

        @dataclass
        class A:
            """Doc."""
            kind: ClassVar[str] = "a"
            x: dict[str, int] | None = None
            y: list = field(default_factory=list)
    ''')
    out = minify(src, "a.py")
    assert '"""Doc."""' not in out and "ClassVar" in out
    module = types.ModuleType("minified_a")  # a real module, as the artifact's import hook makes
    sys.modules["minified_a"] = module
    try:
        exec(compile(out, "a.py", "exec"), module.__dict__)
    finally:
        del sys.modules["minified_a"]
    a = module.A(x={"k": 1})
    assert a.x == {"k": 1} and a.y == [] and module.A.kind == "a"
    assert [f.name for f in dataclasses.fields(module.A)] == ["x", "y"]  # ClassVar still not a field


def test_minify_cache_gives_what_a_fresh_minify_gives_and_trusts_only_regular_files(tmp_path, monkeypatch):
    """The build cache (packer/cache.py) is keyed by everything a minified text depends on: a
    hit is the fresh result; an entry that is a symlink or a FIFO is recomputed, never followed
    or waited on; an empty GOLFPACK_CACHE_DIR turns it off."""
    import os

    source = "def f(long_name):\n    '''doc'''\n    return long_name + 1\n"
    monkeypatch.setenv("GOLFPACK_CACHE_DIR", "")
    fresh = minify(source, "m.py")
    cache = tmp_path / "cache"
    monkeypatch.setenv("GOLFPACK_CACHE_DIR", str(cache))
    assert minify(source, "m.py") == fresh
    entries = list((cache / "minify").iterdir())
    assert len(entries) == 1 and entries[0].read_text() == fresh
    entries[0].write_text("A = 'from the cache'\n")  # shows a hit is read, not recomputed
    assert minify(source, "m.py") == "A = 'from the cache'\n"
    entries[0].unlink()
    planted = tmp_path / "planted.py"
    planted.write_text("B = 'planted'\n")
    entries[0].symlink_to(planted)
    assert minify(source, "m.py") == fresh and not entries[0].is_symlink()  # recomputed and replaced
    entries[0].unlink()
    os.mkfifo(entries[0])
    assert minify(source, "m.py") == fresh  # neither hangs on nor reads a FIFO
    assert minify(source, "n.py") == fresh and len(list((cache / "minify").iterdir())) == 2  # the path is in the key
    monkeypatch.setenv("GOLFPACK_CACHE_DIR", "")
    assert minify(source + "x = 1\n", "m.py").endswith("x=1") and len(list((cache / "minify").iterdir())) == 2
