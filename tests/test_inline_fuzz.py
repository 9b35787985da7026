"""A structure-aware fuzzer for the inlined script's formats, as ``golfpack check`` reads them:
the script's shape (``parse_inline``), its code stream (``read_inline_bundle``: the loader, then
the bundle) and the packed pipeline (``packed_literals``, then ``packed_pipeline``). Mutations
follow the structure (a line of the script, a member of the stream, a literal of the pipeline),
so they reach the checks behind the first; every outcome is the reader's refusal (a ValueError,
or a syntax tree too deep, which check reports) or a result that holds what the reader promises."""
from __future__ import annotations

import ast
import re
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from golfpack.packer.bundle import compress_solid
from golfpack.packer.inline import inline
from golfpack.codec.rules import PACKED_PATH, packed_module
from golfpack.packer.records.check_inline import packed_literals, packed_pipeline
from golfpack.packer.records.layout import InlineParts, inline_prefix, parse_inline, read_inline_bundle, render_inline
from golfpack.packer.runtime.finder import BUNDLE_PATH, pack_bundle

REFUSED = (ValueError, SyntaxError, RecursionError, MemoryError)  # what check_inline turns into a problem
PLANTED = "fuzz_planted_module"  # a module a mutation may name; it must never be imported
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,  # seeded: the same examples in CI
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def inlined(tmp_path_factory):
    """A small inlined script: its bytes, parts and bundle."""
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "s.py").write_text('"""A script."""\nimport golfpack\n\nprint(golfpack.budget(cap=10**9))\n')
    inline(folder / "s.py", folder / "rec")
    data = (folder / "rec" / "train_gpt.py").read_bytes()
    parts = parse_inline(data)
    return data, parts, read_inline_bundle(parts.codec, parts.compressed)


def edits():
    """One structure-level edit of a line: drop a character, insert one, or replace the line."""
    return st.one_of(
        st.tuples(st.just("drop"), st.integers(0, 10**6)),
        st.tuples(st.just("insert"), st.integers(0, 10**6), st.sampled_from(list(" '\\\n\x00#;=()G_é"))),
        st.tuples(st.just("line"), st.sampled_from(["", "G=''", "import os", "#", "G=b''", "del G"])))


def apply(line: bytes, edit) -> bytes:
    if edit[0] == "line":
        return edit[1].encode()
    at = edit[1] % (len(line) + 1)
    return line[:at] + line[at + 1:] if edit[0] == "drop" else line[:at] + edit[2].encode("latin-1") + line[at:]


@FUZZ
@given(which=st.integers(0, 10), edit=edits())
def test_the_script_shape_is_read_back_exactly_or_refused(inlined, which, edit):
    data, parts, _ = inlined
    lines = data.split(b"\n")
    at = next(i for i, ln in enumerate(lines) if ln.startswith(b"G='"))
    golfpack_lines = [0, 1, 2, 3, 4, at - 1, at, at + 1, at + 2, at + 3, len(lines) - 1]  # header, literal, install, marker
    i = golfpack_lines[which] % len(lines)
    mutated = b"\n".join([*lines[:i], apply(lines[i], edit), *lines[i + 1:]])
    try:
        got = parse_inline(mutated)
    except REFUSED:
        return
    assert render_inline(got) == mutated  # accepted only as what golfpack writes


members = st.lists(st.tuples(st.sampled_from(["golfpack/a.py", "golfpack/__init__.py", "../x.py", "a b.py", "x.py",
                                              "golfpack/\u00e9.py", "", "golfpack/a.py"]),
                             st.sampled_from(["x = 1\n", "", "\x00", "\udcff", "import os\n"])), max_size=4)


@FUZZ
@given(prefix=st.sampled_from(["own", "none", "cut", "other"]), files=members, tail=st.sampled_from(["", "nul", "junk"]),
       damage=st.sampled_from(["none", "truncate", "append", "flip"]), codec=st.sampled_from(["lzma", "brotli"]))
def test_the_code_stream_is_golfpack_s_loader_then_a_well_formed_bundle_or_refused(prefix, files, tail, damage, codec):
    loader = inline_prefix()
    head = {"own": loader, "none": b"", "cut": loader[:-7] + b"\0", "other": b"import os\0"}[prefix]
    try:
        body = b"\0".join(p.encode() + b"\0" + s.encode("utf-8", "surrogatepass") for p, s in files)
    except UnicodeEncodeError:
        body = b""
    raw = head + body + {"": b"", "nul": b"\0", "junk": b"\0\xff\xfe"}[tail]
    compressed, used = compress_solid(raw)
    if used != codec:  # the other codec's stream, read as this one's
        compressed = compressed[::-1]
    compressed = {"none": compressed, "truncate": compressed[:-3], "append": compressed + b"\x00\x01",
                  "flip": compressed[:5] + bytes([compressed[5] ^ 0x10]) + compressed[6:] if len(compressed) > 6
                  else compressed}[damage]
    try:
        got = read_inline_bundle(codec, compressed)
    except REFUSED:
        return
    assert all(re.fullmatch(BUNDLE_PATH, p) for p in got)  # well-formed paths only
    assert pack_bundle(got) == raw[len(loader):]  # what the script installs is what was read


def literal_mutations():
    """Edits of one packed literal: a value of another type, nested deeper, a key dropped or
    added, a stage renamed or pointed at another module."""
    return st.one_of(
        st.tuples(st.just("value"), st.sampled_from(["NAME", "FILL", "RULES", "STAGES"]),
                  st.sampled_from([None, 0, 1, -1, 10**30, 1.5, float("inf"), "", "x" * 300, (), [], {}, True])),
        st.tuples(st.just("nest"), st.integers(1, 200)),
        st.tuples(st.just("param"), st.sampled_from(["bits", "clip", "max_classes", "orders", "nope"]),
                  st.sampled_from([0, 2, 9, 99, "6", "sdcap:0", "mse:1", "absmax", 1.0, None, True])),
        st.tuples(st.just("stage"), st.sampled_from(["ctxans", "gptq", "brotli", "evil"]),
                  st.sampled_from([f"{PLANTED}:X", "os:system", "golfpack.codec.encoders.ans:ANS",
                                   "golfpack.codec.encoders.intq:RTN", "builtins:eval", ":", ""])),
        st.tuples(st.just("code"), st.sampled_from(["import " + PLANTED, "X = 1", "STAGES = {}", "def f(): pass"])))


def mutate_packed(source: str, m) -> str:
    tree = ast.parse(source)
    values = {n.targets[0].id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)}
    kind = m[0]
    if kind == "value":
        values[m[1]] = m[2]
    elif kind == "nest":
        nested: list = []
        for _ in range(m[1]):
            nested = [nested]
        values["RULES"] = nested
    elif kind == "param":
        rules = [list(r) for r in values["RULES"]]
        chain = [list(s) for s in rules[0][4]]
        chain[0][1] = {**chain[0][1], m[1]: m[2]}
        rules[0][4] = tuple(tuple(s) for s in chain)
        values["RULES"] = [tuple(r) for r in rules]
    elif kind == "stage":
        values["STAGES"] = {**values["STAGES"], m[1]: m[2]}
    out = packed_module(values)
    return out + m[1] + "\n" if kind == "code" else out


@FUZZ
@given(m=literal_mutations())
def test_the_packed_pipeline_is_literals_golfpack_writes_back_or_refused(inlined, m):
    _, _, files = inlined
    source = mutate_packed(files[PACKED_PATH], m)
    try:
        table = packed_pipeline(packed_literals(source), source)
    except REFUSED:
        assert PLANTED not in sys.modules
        return
    assert PLANTED not in sys.modules
    assert all(d.module.startswith("golfpack.codec.decoders.") for d in table.values())


def test_the_fuzzers_start_from_inputs_the_readers_accept(inlined):
    """Each fuzzer's unmutated input passes its reader: the mutations, not the seeds, are refused."""
    data, parts, files = inlined
    assert parse_inline(data) == parts
    assert render_inline(InlineParts(*(getattr(parts, f) for f in InlineParts.__dataclass_fields__))) == data
    assert read_inline_bundle(parts.codec, compress_solid(inline_prefix() + pack_bundle(files))[0]) == files
    assert set(packed_pipeline(packed_literals(files[PACKED_PATH]), files[PACKED_PATH])) == \
        {"brotli", "ctxans", "gptq", "pack", "raw", "rtn"}
