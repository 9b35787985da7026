"""Exact round trips: lossless stages give back their input bit for bit; quantizers give back
exactly the dequantized tensor they computed at encode time."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from golfpack.codec.decoders.container import read_container
from golfpack.codec.decoders.intq import dequantize
from golfpack.codec.encoders.intq import GPTQParams
from golfpack.codec.gptq import gptq_quantize
from golfpack.codec.host import decode_state_dict
from golfpack.codec.pipeline import encode_state_dict
from golfpack.codec.rdoq import quantize_rdoq
from golfpack.codec.decoders.grid import ClipRule, quantize_rtn
from golfpack.trainer.qat import fake_quantize
from golfpack.codec.spec import load_spec
from golfpack.codec.stage import StageError

LOSSLESS = ["fp32 -> zstd", "fp32 -> shuffle width=4 -> brotli", "fp32 -> lzma", "fp32 -> shuffle width=2 -> zstd level=3"]
CLIPS = ["absmax", "percentile:99.5", "sdclip:3", "mse:8"]


def _tensor(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * 0.05).to(dtype)


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 70), chain=st.sampled_from(LOSSLESS), seed=st.integers(0, 10**6))
def test_lossless_chains_are_bit_exact(rows, cols, chain, seed):
    t = _tensor((rows, cols), torch.float32, seed)
    out, _ = decode_state_dict(encode_state_dict({"w": t}, load_spec(f"*={chain}")))
    assert out["w"].dtype == t.dtype
    assert torch.equal(out["w"].view(torch.int32), t.view(torch.int32))


@pytest.mark.parametrize("store, dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_half_stages_are_exact_for_their_own_dtype(store, dtype):
    t = _tensor((33, 17), dtype, 3)
    out, _ = decode_state_dict(encode_state_dict({"w": t}, load_spec(f"*={store} -> brotli")))
    assert out["w"].dtype == dtype and torch.equal(out["w"], t)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64, torch.int32, torch.int16, torch.int8,
                                   torch.uint8, torch.bool])
def test_raw_stores_any_dtype_exactly(dtype):
    """A model's buffers (a bool mask, a step counter) round-trip exactly; a grid refuses them."""
    g = torch.Generator().manual_seed(0)
    t = torch.randint(-(1 << 62) if dtype == torch.int64 else -100, 100, (6, 5), generator=g)
    t = t.to(dtype) if dtype != torch.bool else t > 0
    if dtype.is_floating_point:
        t = _tensor((6, 5), dtype, 0)
    out, _ = decode_state_dict(encode_state_dict({"b": t, "s": t[0, 0].clone()}, load_spec("*=raw -> brotli")))
    assert out["b"].dtype == dtype and torch.equal(out["b"], t) and torch.equal(out["s"], t[0, 0])
    if not dtype.is_floating_point:
        with pytest.raises(StageError, match="must start with raw"):
            encode_state_dict({"b": t}, load_spec("*=rtn bits=8 -> ans"))


def test_a_container_cannot_make_a_buffer_from_what_raw_did_not_store():
    """Crafted: bool bytes other than 0 and 1; an integer tensor stored as floats; a grid that
    would decode to an integer tensor. Each a ContainerError."""
    from golfpack.codec.decoders.base import TensorMeta
    from golfpack.codec.decoders.container import ContainerError, write_container
    from golfpack.codec.pipeline import encode_tensor

    _, grid_chain, grid_data = encode_tensor("m", torch.ones(4, 4), load_spec("*=rtn bits=8 -> pack").rules[0].stages,
                                             None)
    lies = [(TensorMeta("m", "bool", (4, 4)), [("raw", {"store": "bool"}, {})], b"\x02" * 16, "0 or 1"),
            (TensorMeta("m", "int32", (4, 4)), [("fp32", {"store": "float32"}, {})], b"\0" * 64, "only floats convert"),
            (TensorMeta("m", "int8", (4, 4)), grid_chain, grid_data, "decodes to floats")]
    for meta, chain, data, message in lies:
        with pytest.raises(ContainerError, match=message):
            decode_state_dict(write_container([(meta, chain, data)], {}))
    good = write_container([(TensorMeta("m", "bool", (4, 4)), [("raw", {"store": "bool"}, {})], b"\x01" * 16)], {})
    assert torch.equal(decode_state_dict(good)[0]["m"], torch.ones(4, 4, dtype=torch.bool))


def test_aliases_name_coded_tensors_and_nothing_else():
    """A container's aliases (a tied head coded once) are read strictly: a new name for a coded
    tensor, or the container is refused."""
    from golfpack.codec.decoders.container import ALIASES_KEY, ContainerError, write_container
    from golfpack.codec.pipeline import encode_tensor

    record = encode_tensor("emb", torch.ones(4, 4), load_spec("*=fp32").rules[0].stages, None)
    good = write_container([record], {ALIASES_KEY: {"head": "emb"}})
    out, _ = decode_state_dict(good)
    assert set(out) == {"emb", "head"} and torch.equal(out["head"], out["emb"])
    for bad in ({"head": "nope"}, {"emb": "emb"}, {"": "emb"}, {"h\x1b[2J": "emb"}, ["head"], {"head": 3}):
        with pytest.raises(ContainerError, match=ALIASES_KEY):
            read_container(write_container([record], {ALIASES_KEY: bad}))


@settings(max_examples=40, deadline=None)
@given(shape=st.sampled_from([(7,), (1, 1), (5, 9), (32, 64), (3, 4, 5)]), bits=st.integers(2, 8),
       clip=st.sampled_from(CLIPS), coder=st.sampled_from(["ans", "pack -> zstd", "pack -> lzma"]),
       dtype=st.sampled_from([torch.float32, torch.bfloat16]), seed=st.integers(0, 10**6))
def test_rtn_reproduces_its_dequantized_tensor(shape, bits, clip, coder, dtype, seed):
    t = _tensor(shape, dtype, seed)
    q, scales = quantize_rtn(t, bits, ClipRule.parse(clip))
    expected = dequantize(q, scales, shape, dtype)
    out, _ = decode_state_dict(encode_state_dict({"w": t}, load_spec(f"*=rtn bits={bits} clip={clip} -> {coder}")))
    assert torch.equal(out["w"], expected)
    # The trainer's fake quantizer computes the very same grid.
    assert torch.equal(fake_quantize(t, bits, ClipRule.parse(clip)), expected)


@pytest.mark.parametrize("bits", [3, 6, 8])
@pytest.mark.parametrize("act_order", [True, False])
def test_gptq_round_trip_and_beats_rtn_on_its_objective(bits, act_order):
    g = torch.Generator().manual_seed(bits)
    w = torch.randn(48, 96, generator=g) * 0.05
    x = torch.randn(512, 96, generator=g) @ (torch.randn(96, 96, generator=g) * 0.3)  # correlated inputs
    h = 2 * x.T @ x
    q, scales = gptq_quantize(w, h, GPTQParams(bits, "absmax", act_order=act_order, block=32))
    deq = dequantize(q, scales, tuple(w.shape), w.dtype)
    spec = load_spec(f"*=gptq bits={bits} block=32 act_order={act_order} -> ans")
    out, _ = decode_state_dict(encode_state_dict({"w": w}, spec, hessians={"w": h}))
    assert torch.equal(out["w"], deq)
    q_rtn, s_rtn = quantize_rtn(w, bits, ClipRule.parse("absmax"))
    err = lambda d: float(((x @ (d - w).T) ** 2).sum())  # noqa: E731  the layer-output error GPTQ minimises
    assert err(deq) < err(dequantize(q_rtn, s_rtn, tuple(w.shape), w.dtype))


def test_gptq_without_calibration_is_a_clear_error():
    with pytest.raises(StageError, match="no calibration statistics for 'w'"):
        encode_state_dict({"w": torch.randn(4, 4)}, load_spec("*=gptq bits=6 -> ans"))


def test_ans_symbols_round_trip_many_alphabets():
    from golfpack.codec.decoders.container import read_container
    from golfpack.codec.host import symbols_of
    from golfpack.codec.registry import decoder_table

    for bits in range(2, 9):
        t = _tensor((64, 64), torch.float32, bits) ** 3
        q, _ = quantize_rtn(t, bits, ClipRule())
        c = read_container(encode_state_dict({"w": t}, load_spec(f"*=rtn bits={bits} -> ans")))
        assert np.array_equal(symbols_of(c, c.entries[0], decoder_table()), q.reshape(-1).numpy())


ENCODE = """
import hashlib, sys, torch
from golfpack.codec.pipeline import encode_state_dict
from golfpack.codec.spec import load_spec
g = torch.Generator().manual_seed(1)
sd = {f"w{i}": torch.randn(64, 128, generator=g) for i in range(3)} | {"b": torch.randn(16, generator=g)}
h = {k: (lambda x: x.T @ x)(torch.randn(256, 128, generator=g)) for k in sd if k.startswith("w")}
spec = load_spec("w0=rtn bits=5 clip=mse -> ans; w1=gptq bits=4 -> ctxans; w2=gptq bits=3 lqer=2 -> pack -> zstd; "
                 "*=fp16 -> shuffle -> brotli")
print(hashlib.sha256(encode_state_dict(sd, spec, h)).hexdigest())
"""


def test_encoding_is_deterministic_across_processes():
    """Fresh interpreters with other hash seeds and thread counts code the same bytes."""
    digests = set()
    for seed, threads in (("0", "1"), ("31337", "2")):
        env = {**os.environ, "PYTHONHASHSEED": seed, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        out = subprocess.run([sys.executable, "-c", ENCODE], capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        digests.add(out.stdout.strip())
    assert len(digests) == 1


@pytest.mark.parametrize("bad, message", [
    ("*=rtn bits=6 -> zstd", "insert 'pack'"),
    ("*=rtn bits=6", "must end in bytes"),
    ("*=ans", "consumes symbols but gets tensor"),
    ("*=rtn bits=9 -> ans", "bits must be in 2..8"),
    ("*=rtn bitz=6 -> ans", "unknown parameter"),
    ("*=nope -> ans", "unknown stage 'nope'"),
    ("*=rtn clip=foo -> ans", "unknown clip rule"),
    ("w.weight", "expected 'glob=chain'"),
    ("*=fp32 -> brotli level=-3", "level must be in 0..11"),
    ("*=fp32 -> zstd level=99", "level must be in 0..22"),
    ("*=rtn clip=sdclip:inf -> ans", "unknown clip rule"),
    ("*=gptq damp=-1 -> ans", "damp must be >= 0"),
])
def test_wrong_chains_fail_at_build_time(bad, message):
    with pytest.raises(StageError, match=message):
        load_spec(bad)


def test_the_shipped_pipelines_load_by_name_and_the_cli_names_them_all():
    """``compact`` is the default's rules without the fill and with order-0 ``ans`` (what keeps an
    inlined script's golfpack small); every shipped name is in ``--pipeline``'s help."""
    from golfpack.codec.spec import PIPELINES
    from golfpack.packer.cli import PIPELINE_HELP

    default, compact = load_spec("default"), load_spec("compact")
    assert (default.source, default.fill, compact.source, compact.fill) == ("default", True, "compact", False)
    names = lambda spec: [[x.name.replace("ctxans", "ans") for x in r.stages] for r in spec.rules]  # noqa: E731
    assert names(default) == names(compact)
    assert [r.stages[0].params for r in default.rules] == [r.stages[0].params for r in compact.rules]
    assert [(r.label, r.roles, r.patterns, r.allocate) for r in default.rules] == \
        [(r.label, r.roles, r.patterns, r.allocate) for r in compact.rules]
    assert all(f"{name} (" in PIPELINE_HELP for name in PIPELINES)


def test_spec_first_match_wins(tmp_path):
    p = tmp_path / "spec.toml"
    p.write_text('[[rule]]\nmatch = "blocks.*"\nchain = "rtn bits=4 -> ans"\n'
                 '[[rule]]\nmatch = ["*"]\nchain = "fp16 -> zstd"\n')
    spec = load_spec(p)
    assert spec.rule_for("blocks.0.mlp.fc.weight").stages[0].name == "rtn"
    assert spec.rule_for("tok_emb.weight").stages[0].name == "fp16"
    with pytest.raises(StageError, match="no rule matches"):
        load_spec("blocks.*=fp16 -> zstd").rule_for("tok_emb.weight")


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0,), (0, 0)])
@pytest.mark.parametrize("chain", ["rtn bits=6 -> ans", "rtn bits=4 -> pack -> zstd", "fp16 -> brotli", "fp32 -> lzma"])
def test_empty_tensors_round_trip(shape, chain):
    t = torch.zeros(shape)
    out, _ = decode_state_dict(encode_state_dict({"w": t}, load_spec(f"*={chain}")))
    assert out["w"].shape == t.shape and out["w"].dtype == t.dtype


def test_non_printable_tensor_names_are_refused_at_encode():
    with pytest.raises(StageError, match="printable"):
        encode_state_dict({"a\x1b[2Jb": torch.zeros(2)}, load_spec("*=fp16 -> zstd"))


def _column_structured(rows: int, cols: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cols, generator=g) * torch.logspace(-1, 0.5, cols)[torch.randperm(cols, generator=g)]


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 70), bits=st.integers(2, 8), seed=st.integers(0, 10**6))
def test_ctxans_gives_back_exactly_what_ans_does(rows, cols, bits, seed):
    t = _column_structured(rows, cols, seed)
    a, _ = decode_state_dict(encode_state_dict({"w": t}, load_spec(f"*=rtn bits={bits} -> ans")))
    c, _ = decode_state_dict(encode_state_dict({"w": t}, load_spec(f"*=rtn bits={bits} -> ctxans")))
    assert torch.equal(a["w"], c["w"])


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (7,), (1, 1), (3, 4)])
def test_ctxans_edge_shapes_and_constant_tensors(shape):
    for t in (torch.zeros(shape), torch.full(shape, 0.25)):
        out, _ = decode_state_dict(encode_state_dict({"w": t}, load_spec("*=rtn bits=4 -> ctxans")))
        assert torch.equal(out["w"], decode_state_dict(encode_state_dict({"w": t}, load_spec("*=rtn bits=4 -> ans")))[0]["w"])


def test_ctxans_finds_column_structure_that_order0_cannot():
    t = _column_structured(256, 256, 0)
    ans = len(encode_state_dict({"w": t}, load_spec("*=rtn bits=6 -> ans")))
    ctx = len(encode_state_dict({"w": t}, load_spec("*=rtn bits=6 -> ctxans")))
    iid = {"w": torch.randn(256, 256, generator=torch.Generator().manual_seed(1))}
    flat = len(encode_state_dict(iid, load_spec("*=rtn bits=6 -> ctxans")))
    flat_ans = len(encode_state_dict(iid, load_spec("*=rtn bits=6 -> ans")))
    print(f"column-structured: ans {ans:,} ctxans {ctx:,} ({ctx / ans - 1:+.2%}); iid: {flat_ans:,} -> {flat:,}")
    assert ctx < 0.97 * ans and flat <= flat_ans + 32  # the header's params k, lo, n


def _near_copies(rows: int, cols: int, bases: int, noise: float, seed: int) -> torch.Tensor:
    """Rows that are a few base rows plus a little noise, as an embedding's rare tokens are."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(bases, cols, generator=g)
    return base[torch.randint(bases, (rows,), generator=g)] + noise * torch.randn(rows, cols, generator=g)


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 50), bases=st.integers(1, 5), noise=st.floats(0, 1),
       bits=st.integers(2, 8), seed=st.integers(0, 10**6))
def test_ctxans_reference_rows_give_back_exactly_what_ans_does(rows, cols, bases, noise, bits, seed):
    t = _near_copies(rows, cols, bases, noise, seed)
    a, _ = decode_state_dict(encode_state_dict({"w": t}, load_spec(f"*=rtn bits={bits} -> ans")))
    c, _ = decode_state_dict(encode_state_dict({"w": t}, load_spec(f"*=rtn bits={bits} -> ctxans")))
    assert torch.equal(a["w"], c["w"])


def test_ctxans_codes_near_copy_rows_against_earlier_rows():
    t = _near_copies(512, 128, 16, 0.05, 0)
    ans = len(encode_state_dict({"w": t}, load_spec("*=rtn bits=6 -> ans")))
    without = len(encode_state_dict({"w": t}, load_spec("*=rtn bits=6 -> ctxans refs=false")))
    blob = encode_state_dict({"w": t}, load_spec("*=rtn bits=6 -> ctxans"))
    (entry,) = read_container(blob).entries
    print(f"near-copy rows: ans {ans:,} ctxans without references {without:,} with {len(blob):,}")
    assert entry.chain[-1].params.get("refs") == 1 and len(blob) < 0.6 * without


def _windowed_cosines(rows: int, cols: int, phase: float = 0.0) -> torch.Tensor:
    """An STFT-like kernel: row f is a Hann window times a cosine of frequency f."""
    n = torch.arange(cols, dtype=torch.float64)
    f = torch.arange(rows, dtype=torch.float64)[:, None]
    return (torch.hann_window(cols, periodic=True, dtype=torch.float64) * torch.cos(2 * math.pi * f * n / cols + phase)).float()


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 24), cols=st.integers(2, 90), bits=st.integers(2, 8), phase=st.floats(0, 3.2),
       noise=st.floats(0, 0.3), seed=st.integers(0, 10**6))
def test_row_prediction_gives_back_exactly_what_ans_does(rows, cols, bits, phase, noise, seed):
    t = _windowed_cosines(rows, cols, phase) + noise * torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))
    a, _ = decode_state_dict(encode_state_dict({"w": t}, load_spec(f"*=rtn bits={bits} -> ans")))
    c, _ = decode_state_dict(encode_state_dict({"w": t}, load_spec(f"*=rtn bits={bits} -> rowpred -> ctxans")))
    assert torch.equal(a["w"], c["w"])


def test_the_encoders_prediction_is_the_decoders_column_by_column():
    from golfpack.codec.decoders.rowpred import predict, predict_all

    rng = np.random.default_rng(3)
    x = rng.integers(-31, 32, size=(9, 40)).astype(np.int64)
    for coefs in (rng.integers(-4096, 4097, size=(1, 3)), rng.integers(-4096, 4097, size=(9, 8))):
        whole = predict_all(x, coefs.astype(np.int64))
        assert all(np.array_equal(whole[:, j], predict(x, coefs.astype(np.int64), j)) for j in range(x.shape[1]))


def test_rowpred_predicts_signal_rows_that_column_classes_cannot():
    t = _windowed_cosines(128, 256)
    ans = len(encode_state_dict({"w": t}, load_spec("*=rtn bits=6 -> ans")))
    cols_only = len(encode_state_dict({"w": t}, load_spec("*=rtn bits=6 -> ctxans")))
    blob = encode_state_dict({"w": t}, load_spec("*=rtn bits=6 -> rowpred -> ctxans"))
    (entry,) = read_container(blob).entries
    pred = entry.chain[1]
    print(f"windowed cosines: ans {ans:,} ctxans without prediction {cols_only:,} with {len(blob):,} "
          f"(p={pred.params['p']}, rowwise={pred.params['rowwise']})")
    assert pred.stage == "rowpred" and pred.params["p"] > 0 and len(blob) < 0.7 * cols_only


def test_rowpred_passes_learnt_noise_through():
    """On weights no predictor helps it chooses none: the symbols pass unchanged, no side stream."""
    t = torch.randn(64, 96, generator=torch.Generator().manual_seed(5))
    plain = encode_state_dict({"w": t}, load_spec("*=rtn bits=6 -> ctxans"))
    blob = encode_state_dict({"w": t}, load_spec("*=rtn bits=6 -> rowpred -> ctxans"))
    (entry,) = read_container(blob).entries
    assert entry.chain[1].params == {"p": 0, "rowwise": 0} and not entry.chain[1].blobs
    assert torch.equal(decode_state_dict(blob)[0]["w"], decode_state_dict(plain)[0]["w"])
    assert len(blob) <= len(plain) + 40  # the stage's record in the manifest


def test_order0_bits_of_narrow_integers_does_not_wrap():
    from golfpack.codec.entropy import order0_bits

    edge = np.array([-128, 127, 127, -128], dtype=np.int8)  # max - min overflows int8
    assert order0_bits(edge) == 4.0 == order0_bits(edge.astype(np.float32))
    assert order0_bits(torch.tensor([3, 3, 3], dtype=torch.int8)) == 0.0


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(2, 8), lam=st.floats(0.0, 2.0), seed=st.integers(0, 10**6))
def test_rate_aware_rounding_takes_the_cheaper_neighbour(bits, lam, seed):
    from golfpack.codec.decoders.intq import qmax
    from golfpack.codec.rdoq import code_lengths, rate_aware_round

    m = qmax(bits)
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(seed)) * m / 2
    lengths = code_lengths(torch.clamp(torch.round(x), -m, m).to(torch.int8), bits)
    q = rate_aware_round(x, bits, lengths, lam).float()
    lo, hi = torch.floor(x).clamp(-m, m), (torch.floor(x) + 1).clamp(-m, m)
    assert bool(((q == lo) | (q == hi)).all())
    cost = lambda v: (x - v).square() + lam * lengths[(v + m).long()]  # noqa: E731
    assert bool((cost(q) <= torch.minimum(cost(lo), cost(hi)) + 1e-6).all())
    if lam == 0:
        assert torch.equal(q, torch.clamp(torch.round(x), -m, m))


@pytest.mark.parametrize("quantizer", ["rtn", "gptq"])
def test_rdoq_trades_error_for_bytes_and_round_trips_exactly(quantizer):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(128, 128, generator=g)
    x = torch.randn(1024, 128, generator=g) * torch.linspace(0.2, 2, 128)
    h = {"w": x.T @ x}
    sizes, errors = [], []
    for lam in (0, 0.1, 0.4):
        spec = load_spec(f"*={quantizer} bits=4 clip=sdclip:3 rdoq={lam} -> ans")
        data = encode_state_dict({"w": w}, spec, h)
        out = decode_state_dict(data)[0]["w"]
        q, s = (gptq_quantize(w, h["w"], GPTQParams(bits=4, clip="sdclip:3", rdoq=lam)) if quantizer == "gptq" else
                quantize_rdoq(w, 4, ClipRule.parse("sdclip:3"), lam))
        assert torch.equal(out, dequantize(q, s, (128, 128), torch.float32))
        sizes.append(len(data))
        errors.append(float(((out - w) @ x.T).square().mean()))
    print(f"{quantizer} rdoq 0/0.1/0.4: bytes {sizes}, output error {[round(e, 3) for e in errors]}")
    assert sizes[0] > sizes[1] > sizes[2] and errors[0] < errors[1] < errors[2]


def _dominant_input_hessian(cols: int, seed: int) -> torch.Tensor:
    """Inputs with a few dominant directions (as LMs' massive activations give)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2048, cols, generator=g)
    x[:, :3] *= 30.0
    return x.T @ x


@pytest.mark.parametrize("quantizer", ["rtn", "gptq"])
@pytest.mark.parametrize("shape, rank", [((96, 64), 4), ((64, 96), 16), ((5, 7), 5)])
def test_lqer_round_trips_exactly_and_cuts_the_weighted_error(quantizer, shape, rank):
    from golfpack.codec.decoders.intq import lqer_product, lqer_size
    from golfpack.codec.lqer import lqer_factors

    w = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    h = _dominant_input_hessian(shape[1], 2)
    base = f"*={quantizer} bits=3 clip=absmax"
    plain, fixed = (encode_state_dict({"w": w}, load_spec(f"{base} lqer={r} -> ans"), {"w": h}) for r in (0, rank))
    out = decode_state_dict(fixed)[0]["w"]
    q, s = gptq_quantize(w, h, GPTQParams(bits=3)) if quantizer == "gptq" else quantize_rtn(w, 3, ClipRule.parse("absmax"))
    deq = dequantize(q, s, shape, torch.float32)
    expect = deq + lqer_product(*lqer_factors(w - deq, torch.diagonal(h), rank))
    assert torch.equal(out, expect)  # the decoder adds exactly the encoder's A @ B
    err = lambda v: float(torch.einsum("ij,jk,ik->", (v - w).double(), h.double(), (v - w).double()))  # noqa: E731
    print(f"{quantizer} {shape} rank {rank}: weighted error {err(deq):.4g} -> {err(out):.4g}, "
          f"+{len(fixed) - len(plain)} bytes (factors {lqer_size(*shape, rank)})")
    assert err(out) < 0.5 * err(deq)
    assert len(fixed) - len(plain) >= lqer_size(*shape, rank)


def test_lqer_on_a_vector_or_above_the_rank_is_a_clear_error():
    with pytest.raises(StageError, match="lqer=4 needs a matrix"):
        encode_state_dict({"w": torch.randn(10)}, load_spec("*=rtn lqer=4 -> ans"))
    with pytest.raises(StageError, match="lqer=8 needs a matrix"):
        encode_state_dict({"w": torch.randn(4, 30)}, load_spec("*=rtn lqer=8 -> ans"))


@pytest.mark.parametrize("quantizer", ["rtn", "gptq"])
@pytest.mark.parametrize("lqer", [0, 2])
def test_column_scales_round_trip_exactly_and_cut_the_weighted_error(quantizer, lqer):
    """``colscale``: the symbols code ``W / col`` and decode to ``q * scale * col`` (then the
    correction), bit for bit as the encoder computed them; where three inputs are driven 30x
    harder than the rest, the Hessian-weighted error falls, and so do the bytes."""
    from golfpack.codec.decoders.intq import lqer_product
    from golfpack.codec.encoders.intq import column_scales
    from golfpack.codec.lqer import lqer_factors

    w = torch.randn(96, 64, generator=torch.Generator().manual_seed(1))
    h = _dominant_input_hessian(64, 2)
    base = f"*={quantizer} bits=4 clip=absmax" + (f" lqer={lqer}" if lqer else "")
    plain, scaled = (encode_state_dict({"w": w}, load_spec(f"{base}{p} -> ans"), {"w": h})
                     for p in ("", " colscale=0.5"))
    out = decode_state_dict(scaled)[0]["w"]
    cols = column_scales(torch.diagonal(h), 0.5)
    c = cols.float()
    if quantizer == "gptq":
        q, s = gptq_quantize(w / c[None, :], h * c[:, None] * c[None, :], GPTQParams(bits=4, clip="absmax"))
    else:
        q, s = quantize_rtn(w / c[None, :], 4, ClipRule.parse("absmax"))
    expect = dequantize(q, s, (96, 64), torch.float32, cols)
    if lqer:
        expect = expect + lqer_product(*lqer_factors(w - expect, torch.diagonal(h), lqer))
    assert torch.equal(out, expect)
    err = lambda v: float(torch.einsum("ij,jk,ik->", (v - w).double(), h.double(), (v - w).double()))  # noqa: E731
    before = err(decode_state_dict(plain)[0]["w"])
    print(f"{quantizer} lqer={lqer}: weighted error {before:.4g} -> {err(out):.4g}, bytes {len(plain)} -> {len(scaled)}")
    assert err(out) < 0.8 * before and len(scaled) < len(plain)  # less error for fewer bytes


def _uneven_rows(rows: int, cols: int) -> torch.Tensor:
    """Sensitivities whose first quarter of rows the loss sees 16x more than the rest."""
    sens = torch.full((rows, cols), 1e-4)
    sens[: rows // 4] = 1.6e-3
    return sens


def test_row_steps_follow_the_rows_sensitivity_within_their_range():
    """``row_steps``: multipliers ``(u_r / u_max)^(-power/2)`` of each row's predicted error per
    squared step, so ``S_r s_r^2`` is equal across rows at power 1 and no row's step is finer than
    its rule's; at most ``ROW_STEP_RANGE`` coarser (a dead row's)."""
    from golfpack.codec.decoders.grid import row_scales
    from golfpack.codec.encoders.intq import ROW_STEP_RANGE, row_steps

    w = torch.randn(64, 32, generator=torch.Generator().manual_seed(2))
    sens = _uneven_rows(64, 32)
    rule = ClipRule.parse("sdclip:4")
    steps = row_steps(w, sens, 5, rule, 1.0)
    cost = sens.double().sum(1) * (row_scales(w, 5, rule).double() * steps.double()).square()
    assert float(cost.max() / cost.min()) < 1.01  # equalized, up to the fp16 rounding of the scales
    assert float(steps.min()) == 1.0 and float(steps[:16].max()) < 3.0 < float(steps[16:].min())
    half = row_steps(w, sens, 5, rule, 0.5)
    assert torch.allclose(half, steps.sqrt(), rtol=1e-5)
    assert torch.equal(row_steps(w, torch.ones(64, 32) * row_scales(w, 5, rule).float()[:, None] ** -2, 5, rule, 1.0),
                       torch.ones(64))  # rows of equal cost keep their rule's steps
    sens[-1] = 0.0
    assert float(row_steps(w, sens, 5, rule, 1.0)[-1]) == ROW_STEP_RANGE


@pytest.mark.parametrize("quantizer", ["rtn", "gptq"])
def test_row_steps_round_trip_exactly_and_beat_the_rules_steps_at_their_bytes(quantizer):
    """``rowstep``: the steps live in the fp16 row scales, so the decoder is unchanged and decodes
    bit for bit what the encoder computed; where a quarter of the rows carries most of the loss,
    the row-stepped grid's sensitivity-weighted error is below the rule's own curve (bits 4 to 7,
    interpolated in log error) at the same bytes."""
    from golfpack.codec.decoders.container import write_container
    from golfpack.codec.encoders.intq import row_steps
    from golfpack.codec.pipeline import encode_tensor

    w = torch.randn(96, 64, generator=torch.Generator().manual_seed(1))
    sens, h = _uneven_rows(96, 64), _dominant_input_hessian(64, 2)
    err = lambda v: float((sens.double() * (v - w).double().square()).sum())  # noqa: E731

    def point(chain: str) -> tuple[int, float, torch.Tensor]:
        record = encode_tensor("w", w, load_spec(f"*={quantizer} {chain} -> ans").rule_for("w").stages, h, sens)
        out = decode_state_dict(write_container([record], {}))[0]["w"]
        return len(record[2]), err(out), out

    nbytes, stepped, out = point("bits=6 clip=sdclip:6 rowstep=1")
    steps = row_steps(w, sens, 6, ClipRule.parse("sdclip:6"), 1.0)
    params = GPTQParams(bits=6, clip="sdclip:6")
    q, sc = gptq_quantize(w, h, params, steps) if quantizer == "gptq" else quantize_rtn(w, 6, params.rule, steps)
    assert torch.equal(out, dequantize(q, sc, (96, 64), torch.float32))
    curve = [point(f"bits={b} clip=sdclip:6")[:2] for b in (4, 5, 6, 7)]
    (b0, e0), (b1, e1) = next((a, b) for a, b in zip(curve, curve[1:]) if a[0] <= nbytes <= b[0])
    rule = math.exp(math.log(e0) + (nbytes - b0) / (b1 - b0) * (math.log(e1) - math.log(e0)))
    print(f"{quantizer}: {nbytes} bytes, weighted error {stepped:.4g} row-stepped, {rule:.4g} on the rule's curve")
    assert stepped < 0.8 * rule


def test_row_steps_need_the_sensitivities():
    from golfpack.codec.pipeline import encode_tensor

    with pytest.raises(StageError, match="rowstep needs the loss's sensitivity"):
        encode_state_dict({"w": torch.randn(8, 16)}, load_spec("*=rtn bits=4 rowstep=0.5 -> ans"))
    with pytest.raises(StageError, match="rowstep needs the loss's sensitivity"):
        encode_tensor("w", torch.randn(8, 16), load_spec("*=rtn rowstep=1 -> ans").rule_for("w").stages, None,
                      torch.ones(8, 15))
    with pytest.raises(ValueError, match="rowstep must be in 0..1"):
        load_spec("*=rtn rowstep=2 -> ans")


def test_column_scales_need_a_matrix_and_its_hessian():
    spec = load_spec("*=rtn bits=4 colscale=0.5 -> ans")
    assert spec.needs_calibration(["w"]) and not load_spec("*=rtn bits=4 -> ans").needs_calibration(["w"])
    with pytest.raises(StageError, match="colscale needs a matrix.*without them"):
        encode_state_dict({"w": torch.randn(8, 16)}, spec)
    with pytest.raises(StageError, match="colscale needs a matrix"):
        encode_state_dict({"w": torch.randn(16)}, spec, {"w": torch.eye(16)})
    with pytest.raises(ValueError, match="colscale must be in 0..1"):
        load_spec("*=rtn colscale=2 -> ans")
