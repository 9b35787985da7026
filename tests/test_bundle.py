"""The code bundle ships what the artifact imports, and decoders import only what they may."""
import dataclasses
import sys
import textwrap
import types

import pytest

from golfpack.codec.decode import DecoderSpec
from golfpack.codec.registry import decoder_table
from golfpack.packer.bundle import BundleError, build_bundle, minify


def _decoder_module(tmp_path, monkeypatch, body: str) -> DecoderSpec:
    (tmp_path / "my_decoder.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    return DecoderSpec("my_decoder:decode", "bytes", "bytes")


def test_bundle_holds_core_and_only_the_used_decoders():
    table = decoder_table()
    bundle = build_bundle([table["rtn"], table["ans"], table["fp16"], table["zstd"]])
    files = set(bundle.files)
    assert {"golfpack/codec/decoders/ans.py", "golfpack/codec/decoders/floats.py", "golfpack/model/gpt.py",
            "golfpack/packer/runtime.py", "golfpack/trainer/train.py"} <= files
    assert "golfpack/codec/decoders/pack.py" not in files and "golfpack/codec/spec.py" not in files
    assert "golfpack/packer/cli.py" not in files and "golfpack/codec/stages/coders.py" not in files
    assert bundle.minified_bytes < bundle.raw_bytes and len(bundle.compressed) < bundle.minified_bytes


@pytest.mark.parametrize("imports, message", [
    ("import click", "decoder module 'my_decoder' imports 'click'"),
    ("from golfpack.codec.spec import load_spec", "imports 'golfpack.codec.spec', which would not ship"),
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
    assert "my_decoder.py" in build_bundle([spec]).files


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
