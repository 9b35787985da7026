"""The container parser treats its input as hostile: mutated containers raise ContainerError
(or, if the mutation happens to be valid, decode); nothing else ever escapes."""
import copy
import hashlib
import json
import math

import brotli
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from golfpack.codec.decoders.base import DecodeError
from golfpack.codec.decoders.container import HEADER, ContainerError, read_container
from golfpack.codec.decoders.intq import read_col_scales
from golfpack.codec.host import decode_state_dict, ledger
from golfpack.codec.pipeline import encode_state_dict
from golfpack.codec.spec import load_spec

SPEC = ("a.*=rtn bits=6 clip=mse -> ans; b.*=rtn bits=4 -> pack -> shuffle width=1 -> zstd; "
        "c.*=fp16 -> brotli; d.*=rtn bits=8 -> pack -> lzma; f.*=rtn bits=5 -> ctxans max_classes=4; g.*=rtn bits=6 -> rowpred -> ctxans; h.*=rtn bits=4 lqer=2 -> ans; "
        "k.*=rtn bits=4 colscale=0.5 -> ans; r.*=rtn bits=6 -> ctxans; "
        "*=fp32 -> zstd")


@pytest.fixture(scope="module")
def sample() -> bytes:
    g = torch.Generator().manual_seed(0)
    sd = {n: torch.randn(s, generator=g) for n, s in
          [("a.w", (12, 16)), ("b.w", (8, 8)), ("c.w", (5,)), ("d.w", (3, 7)), ("e.w", (4, 2))]}
    sd["f.w"] = torch.randn(64, 48, generator=g) * torch.logspace(-1.5, 0.5, 48)  # ctxans picks k=3
    sd["a.const"] = torch.full((4, 4), 0.5)
    n, f = torch.arange(40.0), torch.arange(6.0)[:, None]
    sd["g.w"] = torch.hann_window(40) * torch.cos(2 * math.pi * f * n / 40)  # rowpred predicts its rows
    sd["h.w"] = torch.randn(6, 9, generator=g)  # a rank-2 error correction
    sd["r.w"] = torch.randn(2, 32, generator=g).repeat(11, 1) + 0.02 * torch.randn(22, 32, generator=g)  # reference rows
    sd["k.w"] = torch.randn(5, 10, generator=g)  # column scales, from its inputs' Hessian
    hessians = {"k.w": torch.diag(torch.logspace(-2.0, 2.0, 10))}
    # an alias (a tied head coded once), so the fuzzers mutate that meta entry too
    return encode_state_dict(sd, load_spec(SPEC), hessians, meta={"model_config": {"vocab_size": 4},
                                                                  "aliases": {"a.tied": "a.w"}})


def decode_all(data: bytes) -> None:
    """What `golfpack run` and `inspect` do with a container: parse, ledger, decode."""
    try:
        ledger(read_container(data))
        decode_state_dict(data)
    except ContainerError:
        pass


def reseal(header_and_rest: bytes) -> bytes:
    return header_and_rest + hashlib.sha256(header_and_rest).digest()


def split(data: bytes) -> tuple[dict, bytes]:
    _, _, _, m, s = HEADER.unpack_from(data)
    manifest = json.loads(brotli.decompress(data[HEADER.size : HEADER.size + m]))
    return manifest, data[HEADER.size + m : HEADER.size + m + s]


def join(manifest: dict, streams: bytes) -> bytes:
    packed = brotli.compress(json.dumps(manifest).encode(), quality=1)
    return reseal(HEADER.pack(b"GPAK", 1, b"\0\0\0", len(packed), len(streams)) + packed + streams)


def paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k in sorted(obj):
            yield from paths(obj[k], prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from paths(v, prefix + (i,))


# Boundary values for every integer a manifest holds (params, span ends, shape dims, counts):
# around 0, the int8/int16/int32/uint32/int64 edges and golfpack's own limits.
EDGES = sorted({e + d for e in (0, 1 << 7, 1 << 8, 1 << 15, 1 << 16, 1 << 24, 1 << 26, 1 << 27, 1 << 31, 1 << 32,
                                1 << 63) for d in (-1, 0, 1)} | {-(1 << 31), -(1 << 31) - 1, -(1 << 63), -1, 2, 8, 9})
BOUNDARY = st.sampled_from(EDGES)
NASTY = st.one_of(
    st.integers(-(2**64), 2**64), BOUNDARY, st.floats(allow_nan=True), st.text(max_size=8), st.none(), st.booleans(),
    st.just([]), st.just({}), st.just([2**31, 2**31]), st.just([0, 10**12]), st.just([[[[[]]]]]),
    st.lists(st.integers(-5, 10**9), max_size=5), st.lists(BOUNDARY, min_size=1, max_size=3),
    st.tuples(BOUNDARY, BOUNDARY).map(list), st.just("gptq"), st.just("float16"), st.just({"x": [1]}),
    st.text(alphabet="\x1b[2J\r\n", min_size=1, max_size=6),
)


def fuzz(n: int) -> settings:
    return settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                    database=None)


def test_clean_sample_decodes(sample):
    out, meta = decode_state_dict(sample)
    assert set(out) == {"a.w", "b.w", "c.w", "d.w", "e.w", "f.w", "g.w", "h.w", "k.w", "r.w", "a.const", "a.tied"}
    assert meta["model_config"]["vocab_size"] == 4 and torch.equal(out["a.tied"], out["a.w"])


@pytest.mark.slow
@fuzz(4000)
@given(data=st.data())
def test_raw_byte_mutations(sample, data):
    buf = bytearray(sample)
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend", "splice"]))
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "truncate":
        del buf[data.draw(st.integers(0, len(buf) - 1)):]
    elif kind == "extend":
        buf += data.draw(st.binary(min_size=1, max_size=64))
    else:
        i = data.draw(st.integers(0, len(buf)))
        buf[i:i] = data.draw(st.binary(min_size=1, max_size=16))
    assume(bytes(buf) != sample)  # two flips of one bit cancel
    with pytest.raises(ContainerError):
        read_container(bytes(buf))


def test_column_scale_attacks_are_container_errors(sample):
    """A column-scale stream of the wrong length, a non-finite scale, a flag other than 1, the
    flag without its stream: each refused before any scale multiplies a symbol."""
    manifest, streams = split(sample)
    rec = next(r for t in manifest["tensors"] for r in t["chain"] if "cols" in r["params"])
    offset, length = rec["blobs"]["cols"]
    inf_scale = streams[:offset] + b"\x00\x7c" + streams[offset + 2:]  # fp16 +inf
    cases = [({"cols": 2}, streams, "cols"), ({"cols": True}, streams, "cols"), ({}, inf_scale, "non-finite column")]
    for change, data, message in cases:
        m = copy.deepcopy(manifest)
        next(r for t in m["tensors"] for r in t["chain"] if "cols" in r["params"])["params"].update(change)
        with pytest.raises(ContainerError, match=message):
            decode_state_dict(join(m, data))
    m = copy.deepcopy(manifest)  # the flag without its stream (the container's spans then leave a gap)
    del next(r for t in m["tensors"] for r in t["chain"] if "cols" in r["params"])["blobs"]["cols"]
    with pytest.raises(ContainerError, match="cols|gap"):
        decode_state_dict(join(m, streams))
    with pytest.raises(DecodeError, match="cols stream has 18 bytes, expected 20"):  # one column short
        read_col_scales(streams[offset : offset + length - 2], (5, 10))
    with pytest.raises(DecodeError, match="column scales for a tensor of shape"):
        read_col_scales(streams[offset : offset + length], (50,))


@pytest.mark.slow
@fuzz(3000)
@given(data=st.data())
def test_resealed_manifest_mutations(sample, data):
    manifest, streams = split(sample)
    all_paths = list(paths(manifest))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(all_paths))
        value = copy.deepcopy(data.draw(NASTY))  # st.just() hands out one shared object
        if not path:
            manifest = value
            break
        target = manifest
        try:
            for p in path[:-1]:
                target = target[p]
            target[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            pass
    decode_all(join(manifest, streams))


@pytest.mark.slow
@fuzz(3000)
@given(data=st.data())
def test_boundary_values_in_every_integer_field(sample, data):
    """Structure-aware: every int in the manifest (params, spans, shapes) set to an edge value."""
    manifest, streams = split(sample)
    int_paths = [p for p in paths(manifest) if p and isinstance(_get(manifest, p), int)
                 and not isinstance(_get(manifest, p), bool)]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(int_paths))
        _get(manifest, path[:-1])[path[-1]] = data.draw(BOUNDARY)
    decode_all(join(manifest, streams))


def _get(obj, path):
    for p in path:
        obj = obj[p]
    return obj


def test_ans_offset_at_the_int32_edge_is_a_container_error(sample):
    manifest, streams = split(sample)
    ans = next(r for t in manifest["tensors"] for r in t["chain"] if r["stage"] == "ans")
    for lo in (2**31, 2**31 - 1, -(2**31) - 1, 2**63):
        ans["params"]["lo"] = lo
        with pytest.raises(ContainerError, match="lo"):
            decode_state_dict(join(manifest, streams))


def _predicted(manifest: dict) -> dict:
    return next(r for t in manifest["tensors"] for r in t["chain"] if r["stage"] == "rowpred" and r["params"]["p"])


def test_rowpred_prediction_attacks_are_container_errors(sample):
    """Coefficients that would grow the symbols past int32 (checked column by column, before
    int64 could wrap), out of range or for the wrong order, and a coefficient stream without
    prediction: each one line, nothing else."""
    manifest, streams = split(sample)
    rec = _predicted(manifest)
    offset, length = rec["blobs"]["coefs"]
    p = rec["params"]["p"]
    cases = [(p, (4096).to_bytes(2, "little") * (length // 2), "int32"),
             (p, (4097).to_bytes(2, "little") * (length // 2), "coefficient outside"),
             (p - 1, streams[offset : offset + length], "coefficient stream has"),
             (0, streams[offset : offset + length], "without prediction")]
    for order, coefs, message in cases:
        m = copy.deepcopy(manifest)
        _predicted(m)["params"]["p"] = order
        crafted = streams[:offset] + coefs + streams[offset + length :]
        with pytest.raises(ContainerError, match=message):
            decode_state_dict(join(m, crafted))


def _referencing(manifest: dict) -> dict:
    return next(r for t in manifest["tensors"] for r in t["chain"] if r["stage"] == "ctxans" and "refs" in r["params"])


def test_ctxans_reference_attacks_are_container_errors(sample):
    """A row referencing itself or a later row, a bitmap bit past the last row, a stream of
    the wrong length for its bitmap, an older format's prediction parameter, a bad flag, and a reference
    stream without references: each one line, nothing else."""
    manifest, streams = split(sample)
    rec = _referencing(manifest)
    offset, length = rec["blobs"]["refs"]
    refs = streams[offset : offset + length]  # 22 rows: 3 bitmap bytes (2 spare bits), then 5-bit references
    later = refs[:3] + b"\xff" * (length - 3)  # every reference 31: later than its row
    first = bytes([refs[0] ^ 0x80]) + refs[1:]  # row 0 flipped: one reference more or fewer than the stream holds
    past = refs[:2] + bytes([refs[2] | 0x01]) + refs[3:]  # row 23 of 22
    cases = [({}, later, "references itself or a later row"), ({}, first, "reference stream has"),
             ({}, past, "past the last row"), ({"p": 1}, refs, "unknown ctxans"), ({"refs": 2}, refs, "refs"),
             ({"refs": True}, refs, "refs")]
    for change, crafted, message in cases:
        m = copy.deepcopy(manifest)
        _referencing(m)["params"].update(change)
        with pytest.raises(ContainerError, match=message):
            decode_state_dict(join(m, streams[:offset] + crafted + streams[offset + length:]))
    m = copy.deepcopy(manifest)
    del _referencing(m)["params"]["refs"]
    with pytest.raises(ContainerError, match="without refs|table counts"):
        decode_state_dict(join(m, streams))


def test_lqer_attacks_are_container_errors(sample):
    """A rank the shape cannot hold, a rank of 0 written out, a factor stream of the wrong
    length, a non-finite factor scale: each refused before any product is formed."""
    manifest, streams = split(sample)
    rec = next(r for t in manifest["tensors"] for r in t["chain"] if "lqer" in r["params"])
    offset, length = rec["blobs"]["lqer"]
    nan_scale = streams[: offset + length - 2] + b"\x00\x7e" + streams[offset + length :]  # fp16 NaN
    cases = [({"lqer": 7}, streams, "rank-7 correction"), ({"lqer": 0}, streams, "lqer"),
             ({"lqer": 65}, streams, "lqer"), ({"lqer": 1}, streams, "lqer stream has"),
             ({}, nan_scale, "non-finite lqer scale")]
    for change, data, message in cases:
        m = copy.deepcopy(manifest)
        next(r for t in m["tensors"] for r in t["chain"] if "lqer" in r["params"])["params"].update(change)
        with pytest.raises(ContainerError, match=message):
            decode_state_dict(join(m, data))


@pytest.mark.slow
@fuzz(3000)
@given(data=st.data())
def test_resealed_stream_mutations(sample, data):
    manifest, streams = split(sample)
    buf = bytearray(streams)
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    decode_all(join(manifest, bytes(buf)))


def test_header_lies_are_caught_before_allocation(sample):
    _, _, _, m, s = HEADER.unpack_from(sample)
    for m2, s2 in [(2**32 - 1, s), (m, 2**32 - 1), (0, 0)]:
        bad = HEADER.pack(b"GPAK", 1, b"\0\0\0", m2, s2) + sample[HEADER.size :]
        with pytest.raises(ContainerError, match="header declares"):
            read_container(bad)
    with pytest.raises(ContainerError, match="SHA-256 mismatch"):
        read_container(sample[:-1] + bytes([sample[-1] ^ 1]))
    with pytest.raises(ContainerError, match="bad magic"):
        read_container(b"PK\x03\x04" + sample[4:])
    big = {"tensors": [{"name": "x", "dtype": "float32", "shape": [2**20, 2**20], "chain": [], "data": [0, 0]}]}
    with pytest.raises(ContainerError, match="shape|exceed"):
        read_container(join(big, b""))


def _varints_by_the_loop(raw: bytes, limit: int):
    """The format's definition, one byte at a time: what read_all_varints must agree with."""
    values, pos = [], 0
    while pos < len(raw):
        if len(values) >= limit:
            return "more"
        value = shift = 0
        while True:
            if pos >= len(raw) or shift > 56:
                return "bad"
            b = raw[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        values.append(value)
    return values


@given(raw=st.lists(st.sampled_from([0, 1, 0x7F, 0x80, 0x81, 0xFF]), max_size=40).map(bytes),
       limit=st.integers(0, 12))
@settings(max_examples=300, deadline=None, derandomize=True, database=None)
def test_vectorized_varints_read_what_the_byte_loop_reads(raw, limit):
    from golfpack.codec.decoders.counts import read_all_varints

    want = _varints_by_the_loop(raw, limit)
    if isinstance(want, list):
        assert read_all_varints(raw, limit).tolist() == want
    else:
        with pytest.raises(DecodeError):
            read_all_varints(raw, limit)
