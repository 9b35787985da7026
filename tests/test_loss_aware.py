"""The loss-aware allocator: the sensitivities are the estimator they claim to be, and the
closed loop ships the contender of least predicted rise unless a score beats it beyond its
noise, recorded in the container for ``inspect``. How well the prediction ranks real losses is a
measurement, printed by ``golfpack bench rd`` (docs/benchmarks.md)."""
from __future__ import annotations

import re

import pytest
import torch

from golfpack.codec.allocate import LossModel, loss_rise
from golfpack.codec.decoders.config import HEAD_PART, LOOKUP_PART
from golfpack.codec.contenders import CONTENDERS, PREDICTED, TRAINED, Allocation, pick
from golfpack.codec.fill import fill
from golfpack.codec.host import decode_state_dict
from golfpack.codec.registry import decoder_table
from golfpack.codec.spec import load_spec
from golfpack.trainer.roles import tensor_roles
from golfpack.model.checkpoint import load_checkpoint
from golfpack.packer.ledger import read_contenders
from golfpack import contender_score
from golfpack.trainer.calibration_files import calib_path, collect_sensitivity, heldout_batches, load_hessians

SEQ = 128


@pytest.fixture(scope="module")
def setup(trained, train_glob):
    ckpt = load_checkpoint(trained)
    model = ckpt.build_model()
    sens = collect_sensitivity(model, train_glob, 8192, SEQ, skip=2048, progress=False)
    held = heldout_batches(train_glob, model.vocab_size, 2048 + 8192, 8192, SEQ)
    return ckpt, model, sens, held, load_hessians(calib_path(trained))


def test_sensitivities_cover_every_matrix_and_are_non_negative(setup):
    ckpt, model, sens, _, _ = setup
    matrices = {n for n, p in model.named_parameters() if p.ndim == 2}
    parts = {f"tok_emb.weight{p}" for p in (LOOKUP_PART, HEAD_PART)}  # the tied embedding's two roles
    assert set(sens) == matrices | parts
    assert all(s.shape == ckpt.state_dict[n.split("#")[0]].shape for n, s in sens.items())
    assert all(bool((s >= 0).all()) and float(s.sum()) > 0 for s in sens.values())


def test_sensitivity_is_the_scaled_mean_squared_sequence_gradient(setup, train_glob):
    """The estimator, recomputed by hand for two tensors: one gradient per window of the
    tokens after ``skip`` (consecutive windows, each target the next token), squared,
    averaged, times ``seq_len / 2``."""
    from golfpack.model.shards import TokenStream

    ckpt, model, sens, _, _ = setup
    stream = TokenStream(train_glob, model.vocab_size)
    stream.take(2048)
    tokens = stream.take(8192 + 1).long()
    names = ["blocks.1.mlp.proj.weight", "tok_emb.weight"]
    acc = {n: torch.zeros_like(sens[n], dtype=torch.float64) for n in names}
    params = dict(model.named_parameters())
    for i in range(8192 // SEQ):
        chunk = tokens[i * SEQ : (i + 1) * SEQ + 1]
        model.zero_grad()
        model(chunk[:-1][None], chunk[1:][None]).backward()
        for n in names:
            acc[n] += params[n].grad.double().square()
    model.zero_grad()
    for n in names:
        expected = (acc[n] * SEQ / (2 * (8192 // SEQ))).float()
        assert torch.allclose(sens[n], expected, rtol=1e-5, atol=1e-12), n


def test_a_tied_embeddings_two_roles_are_each_the_same_estimator(setup, train_glob):
    """The tied embedding's lookup and head parts, recomputed by hand with the lookup reading a
    copy of the weight: the copy's gradient is the lookup's, the weight's own the head's."""
    from golfpack.model.shards import TokenStream

    _, model, sens, _, _ = setup
    stream = TokenStream(train_glob, model.vocab_size)
    stream.take(2048)
    tokens = stream.take(8192 + 1).long()
    emb = model.tok_emb
    copy = emb.weight.detach().clone().requires_grad_(True)
    emb.forward = lambda ids: torch.nn.functional.embedding(ids, copy)  # this instance only
    lookup, head = torch.zeros_like(copy, dtype=torch.float64), torch.zeros_like(copy, dtype=torch.float64)
    try:
        for i in range(8192 // SEQ):
            chunk = tokens[i * SEQ : (i + 1) * SEQ + 1]
            model.zero_grad()
            copy.grad = None
            model(chunk[:-1][None], chunk[1:][None]).backward()
            lookup += copy.grad.double().square()
            head += emb.weight.grad.double().square()
    finally:
        del emb.forward
        model.zero_grad()
    scale = SEQ / (2 * (8192 // SEQ))
    for part, acc in ((LOOKUP_PART, lookup), (HEAD_PART, head)):
        assert torch.allclose(sens["tok_emb.weight" + part], (acc * scale).float(), rtol=1e-5, atol=1e-12), part
    whole, parts = float(sens["tok_emb.weight"].sum()), float(lookup.sum() + head.sum()) * scale
    print(f"\nlookup {float(lookup.sum()) * scale:.4g} + head {float(head.sum()) * scale:.4g} = {parts:.4g}; "
          f"whole {whole:.4g}")
    assert float(sens["tok_emb.weight" + LOOKUP_PART].sum()) > 0 and float(sens["tok_emb.weight" + HEAD_PART].sum()) > 0


def test_an_untied_model_has_no_role_parts():
    """Only an embedding that is also the output layer is read in two roles."""
    from golfpack.trainer.calibrate import sensitivities_of

    class Untied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok_emb, self.lm_head = torch.nn.Embedding(16, 8), torch.nn.Linear(8, 16, bias=False)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(self.lm_head(self.tok_emb(x)).flatten(0, 1), y.flatten())

    x = torch.randint(0, 16, (2, 8), generator=torch.Generator().manual_seed(0))
    sens = sensitivities_of(Untied(), [(x, x.roll(1, 1))], progress=False)
    assert set(sens) == {"tok_emb.weight", "lm_head.weight"}


def test_the_closed_loop_scores_every_contender_within_the_budget(setup, trained):
    ckpt, model, sens, held, hessians = setup
    state = {k: v.float() for k, v in ckpt.state_dict.items()}
    spec = load_spec("default").with_roles(tensor_roles(model))
    budget = int(4.5 * sum(t.numel() for t in state.values()) / 8)
    score = contender_score(ckpt.build_model(), held, decoder_table())
    alloc = fill(state, spec, hessians, budget, {}, sensitivity=sens, score=score)
    print("\n".join(alloc.log))
    by_name = {c["name"]: c for c in alloc.contenders}
    guards = set(CONTENDERS) - set(PREDICTED) - {TRAINED}  # no plan: no qat contender
    (least,) = set(by_name) - guards  # golfpack's own allocations: only the best predicted one is scored
    assert guards < set(by_name) and len(alloc.container) <= budget
    assert alloc.name == least or (alloc.name in guards and by_name[alloc.name]["loss"] < by_name[least]["loss"])
    passed = [re.fullmatch(r"contender (\S+): .* predicted rise (\S+), not scored .*", line) for line in alloc.log]
    passed = dict(m.groups() for m in passed if m)  # the other allocations the prediction judged: not scored
    assert {"fill", "fill-no-lqer"} <= {least, *passed} <= set(PREDICTED)  # column scales: where inputs are uneven
    assert all(float(rise) >= by_name[least]["predicted"] for rise in passed.values())
    decoded, meta = decode_state_dict(alloc.container)
    assert read_contenders(meta) == (alloc.contenders, alloc.name)
    windows = score(alloc.container)
    assert abs(sum(windows) / len(windows) - by_name[alloc.name]["loss"]) <= 1e-6  # the shipped container's score
    def rise(n: str) -> float:  # a matrix's errors cancel in its output; a tied embedding's in its head's only
        w, w_hat = state[n], decoded[n].float()
        if n == "tok_emb.weight":
            return loss_rise(w, w_hat, sens[n + LOOKUP_PART]) + loss_rise(w, w_hat, sens[n + HEAD_PART], hessians[n])
        return loss_rise(w, w_hat, sens[n], hessians.get(n))

    rise = sum(rise(n) for n in alloc.choice)
    assert rise == pytest.approx(by_name[alloc.name]["predicted"], rel=1e-5)  # predicted from the exact weights


def contender(name: str, predicted: float | None, windows: list[float]) -> Allocation:
    return Allocation(b"", {}, name=name, loss=sum(windows) / len(windows), windows=windows, predicted=predicted)


def test_a_guard_overrides_the_prediction_only_beyond_its_noise():
    noisy = [4.0, 4.2, 3.9, 4.1]
    best, other = contender("fill", 0.001, noisy), contender("fill-no-lqer", 0.002, [x - 0.01 for x in noisy])
    slightly_lower = contender("records", 0.002, [x - 0.001 + 0.05 * (-1) ** i for i, x in enumerate(noisy)])
    clearly_lower = contender("records", 0.002, [x - 0.01 for x in noisy])
    assert pick([best, other])[0] is best  # the prediction judges golfpack's own allocations
    assert pick([best, other, slightly_lower])[0] is best  # 0.001 lower, standard error 0.025
    chosen, why = pick([best, other, clearly_lower])
    assert chosen is clearly_lower and "below fill" in why
    unpredicted = [contender("fill", None, noisy), contender("records", None, [x + 1e-9 for x in noisy])]
    assert pick(unpredicted)[0] is unpredicted[0] and pick(unpredicted[::-1])[0] is unpredicted[0]


@pytest.mark.parametrize("meta", [
    {"contenders": [{"name": "fill", "bytes": 1, "loss": 1.0}], "chosen": "evil"},
    {"contenders": [{"name": "evil", "bytes": 1, "loss": 1.0}], "chosen": "evil"},
    {"contenders": [{"name": "fill", "bytes": True, "loss": 1.0}], "chosen": "fill"},
    {"contenders": [{"name": "fill", "bytes": 1, "loss": 1.0}] * 6, "chosen": "fill"},
    {"contenders": [{"name": "fill", "bytes": 1, "loss": 1.0, "predicted": "0"}], "chosen": "fill"},
    {"contenders": [{"name": "fill", "bytes": 1, "loss": 1.0, "evil": 1.0}], "chosen": "fill"},
    {"contenders": "fill", "chosen": "fill"},
])
def test_a_crafted_contenders_record_is_left_out_of_the_ledger(meta):
    assert read_contenders(meta) == ([], "")


def test_the_predicted_rise_sees_errors_that_cancel_in_the_output():
    """Each row's diagonal estimate is scaled by its output error energy over the energy it
    would have without cancellation: 1 with an identity Hessian, 0 for an error orthogonal to
    every input, and in between for GPTQ, which makes errors cancel on purpose."""
    w, sens = torch.zeros(2, 2), torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    d = torch.tensor([[1.0, -1.0], [0.5, 0.0]])
    assert loss_rise(w, w - d, sens) == pytest.approx(1 + 2 + 0.75)
    assert loss_rise(w, w - d, sens, torch.eye(2)) == pytest.approx(1 + 2 + 0.75)
    x = torch.tensor([[1.0], [1.0]])  # every input is (t, t): row 0's error (1, -1) never shows
    assert loss_rise(w, w - d, sens, x @ x.T) == pytest.approx(0.75)
    # LossModel: a matrix's rows cancel, an embedding's never, a tied embedding's head part does.
    h = {n: x @ x.T for n in ("m", "e")}
    assert LossModel({"m": sens}, h).rise("m", w, w - d) == pytest.approx(0.75)
    assert LossModel({"e": sens}, h, {"e"}).rise("e", w, w - d) == pytest.approx(3.75)
    split = {"e": sens, "e" + LOOKUP_PART: sens, "e" + HEAD_PART: 2 * sens}
    assert LossModel(split, h, {"e"}).rise("e", w, w - d) == pytest.approx(3.75 + 2 * 0.75)
    assert LossModel(split, h, {"e"}).total({"e": w}, {"e": w - d}) == pytest.approx(3.75 + 2 * 0.75)
    one_part = {"e": sens, "e" + LOOKUP_PART: sens}  # both parts or the whole
    assert LossModel(one_part, h, {"e"}).rise("e", w, w - d) == pytest.approx(3.75)


def test_a_sensitivity_part_of_another_shape_is_not_read(tmp_path):
    """A sensitivity file's parts round-trip exactly; a part (or whole) whose shape is not its
    tensor's is left out, as is a part of a tensor the fill does not allocate."""
    from golfpack.codec.allocatable import split_tensors
    from golfpack.codec.allocate import sensitivities_for
    from golfpack.trainer.calibration_files import save_hessians

    g = torch.Generator().manual_seed(0)
    state = {"tok_emb.weight": torch.randn(8, 4, generator=g), "ln.weight": torch.randn(4, generator=g)}
    sens = {"tok_emb.weight": torch.rand(8, 4, generator=g), "tok_emb.weight" + LOOKUP_PART: torch.rand(8, 4, generator=g),
            "tok_emb.weight" + HEAD_PART: torch.rand(4, 8, generator=g), "ln.weight" + HEAD_PART: torch.rand(1, 4)}
    save_hessians(tmp_path / "s.pt", sens)
    read = load_hessians(tmp_path / "s.pt", "sensitivity")
    assert read.keys() == sens.keys() and all(torch.equal(read[n], t) for n, t in sens.items())
    _, _, kept = split_tensors(load_spec("*.weight=rtn -> ans"), state, {}, read)
    assert set(kept) == {"tok_emb.weight", "tok_emb.weight" + LOOKUP_PART}
    stray = {**read, "ghost.weight": torch.rand(8, 4), "ghost.weight" + HEAD_PART: torch.rand(8, 4)}
    assert sensitivities_for(stray, state) == kept  # bench rd's reading: no allocatable names, the same shapes


def test_gptq_is_predicted_below_round_to_nearest_only_with_the_hessian(setup):
    from golfpack.codec.decoders.grid import quantize_rtn
    from golfpack.codec.decoders.intq import dequantize
    from golfpack.codec.encoders.intq import GPTQParams
    from golfpack.codec.gptq import gptq_quantize

    ckpt, _, sens, _, hessians = setup
    name = "blocks.0.mlp.fc.weight"
    w, h, params = ckpt.state_dict[name].float(), hessians[name], GPTQParams(bits=3, clip="sdclip:4")
    gptq = dequantize(*gptq_quantize(w, h, params), tuple(w.shape), torch.float32)
    rtn = dequantize(*quantize_rtn(w, params.bits, params.rule), tuple(w.shape), torch.float32)
    print(f"\n{name} int3: diagonal rtn {loss_rise(w, rtn, sens[name]):.4g} gptq {loss_rise(w, gptq, sens[name]):.4g}; "
          f"with H rtn {loss_rise(w, rtn, sens[name], h):.4g} gptq {loss_rise(w, gptq, sens[name], h):.4g}")
    assert loss_rise(w, gptq, sens[name], h) < loss_rise(w, rtn, sens[name], h)
    assert loss_rise(w, gptq, sens[name], h) < loss_rise(w, gptq, sens[name])


def test_the_fronts_without_a_correction_stay_whole(setup):
    """``fill-no-lqer`` allocates from the candidates without LQER: corrected candidates that
    dominate them must not remove them (they once did, and left an embedding only 3 bits)."""
    from golfpack.codec.allocate import candidates, pareto

    ckpt, _, sens, _, hessians = setup
    name = "tok_emb.weight"
    w, hdiag = ckpt.state_dict[name].float(), torch.diagonal(hessians[name]).float()
    both = candidates(w, hdiag, sens=sens[name])
    plain = candidates(w, hdiag, lqer=(), sens=sens[name])
    assert any(c.lqer for c in both)
    assert pareto(c for c in both if not c.lqer) == pareto(plain)


def test_no_candidate_leaves_the_region_where_the_prediction_holds(setup):
    """A grid that rounds most weights to zero (3 bits clipped at 25 sigma) is never offered,
    however small the sensitivities say its cost is; a grid within the bound is."""
    from golfpack.codec.allocate import MAX_RELATIVE_ERROR, candidates, estimate

    ckpt, _, sens, _, hessians = setup
    name = "blocks.1.attn.c_q.weight"
    w, hdiag = ckpt.state_dict[name].float(), torch.diagonal(hessians[name]).float()
    zeroing = estimate(w, 3, "sdclip:25", hdiag, sens=sens[name])
    assert zeroing.relative > MAX_RELATIVE_ERROR
    offered = candidates(w, hdiag, sens=sens[name])
    assert offered and all(c.relative <= MAX_RELATIVE_ERROR for c in offered)
    assert any(c.bits == 3 for c in offered)


def test_each_tensor_is_encoded_by_the_quantizer_whose_exact_weights_predict_lower():
    """``fill`` encodes a chosen grid by the rule's quantizer (GPTQ) or by round-to-nearest,
    whichever leaves the lower predicted rise: on inputs driven by a few directions GPTQ moves
    errors where the layer's output cancels them, which pays for a matrix and costs a tied
    embedding (looked up row by row, so its prediction has no cancelling Hessian); the decoder
    table of a pipeline that names only gptq still holds rtn, so the container decodes."""
    from golfpack.codec.allocate import Candidate
    from golfpack.codec.decoders.chain import decode_container
    from golfpack.codec.decoders.container import read_container, write_container
    from golfpack.codec.fill import Filler, with_grid
    from golfpack.codec.pipeline import encode_tensor
    from golfpack.codec.encoders.intq import RTN
    from golfpack.codec.allocatable import used_decoders

    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 3, generator=g) @ torch.randn(3, 32, generator=g) + 0.05 * torch.randn(512, 32, generator=g)
    h = x.T @ x / x.shape[0]
    state = {"tok_emb.weight": torch.randn(64, 32, generator=g), "blocks.0.mlp.fc.weight": torch.randn(64, 32, generator=g)}
    spec = load_spec("*.weight=gptq -> ans").with_roles({"tok_emb.weight": "embedding",
                                                         "blocks.0.mlp.fc.weight": "matrix"})
    sens = {n: torch.ones_like(w) for n, w in state.items()}
    filler = Filler(state, spec, {n: h for n in state}, {}, lambda _: None, sens)
    grid = Candidate(bits=3, clip="sdclip:4", rate=0.0, distortion=0.0)
    chosen = {}
    for n, w in state.items():
        gptq = with_grid(spec.rule_for(n).stages, grid)
        rises = {q: filler.exact_rise(n, encode_tensor(n, w, stages, h))
                 for q, stages in (("gptq", gptq), ("rtn", (RTN(bits=3, clip="sdclip:4"), *gptq[1:])))}
        record = filler.encoded(n, grid)
        chosen[n] = record[1][0][0]
        print(f"{n}: predicted rise gptq {rises['gptq']:.4g} rtn {rises['rtn']:.4g}, encoded by {chosen[n]}")
        assert chosen[n] == min(rises, key=rises.get) and filler.rise(n, grid) == min(rises.values())
    assert chosen == {"tok_emb.weight": "rtn", "blocks.0.mlp.fc.weight": "gptq"}
    # The same embedding with its sensitivity in its two roles' parts: all in the head, whose
    # errors GPTQ makes cancel, and GPTQ encodes it; all in the lookup, round-to-nearest.
    for lookup, quantizer in ((0.0, "gptq"), (1.0, "rtn")):
        w = state["tok_emb.weight"]
        parts = {"tok_emb.weight" + LOOKUP_PART: torch.full_like(w, lookup),
                 "tok_emb.weight" + HEAD_PART: torch.full_like(w, 1.0 - lookup)}
        split = Filler(state, spec, {n: h for n in state}, {}, lambda _: None, {**sens, **parts})
        assert set(split.sens) == set(sens) | set(parts)
        assert split.encoded("tok_emb.weight", grid)[1][0][0] == quantizer, lookup
    table = used_decoders(spec, state)
    assert {"gptq", "rtn"} <= set(table)
    decoded = decode_container(read_container(write_container([filler.encoded(n, grid) for n in state], {})), table)
    assert set(decoded) == set(state)


def test_the_closed_loop_scores_tokens_the_run_never_reached(train_glob):
    """``scoring_batches``: the stream's last tokens when the run read less than what precedes
    them; else the ones after calibration's, with the log saying how many the run trained on."""
    from golfpack.model.shards import load_tokens, resolve_shards, shard_tokens
    from golfpack.trainer.calibration_files import scoring_batches

    total = sum(shard_tokens(f) for f in resolve_shards(train_glob))
    stream = load_tokens(train_glob).to(torch.int64)
    n = 4 * SEQ
    tail, what = scoring_batches(train_glob, 1024, 2048, n, SEQ, seen=8 * 1024)
    assert "never reached" in what and f"of {total:,}" in what
    assert torch.equal(torch.cat([x for x, _ in tail]).reshape(-1), stream[total - n - 1 : total - 1])
    assert torch.equal(tail[-1][1].reshape(-1)[-1], stream[-1])  # the last target is the stream's last token
    head, what = scoring_batches(train_glob, 1024, 2048, n, SEQ, seen=total)
    assert torch.equal(torch.cat([x for x, _ in head]).reshape(-1), stream[2048 : 2048 + n])
    assert f"the run trained on {n:,} of them" in what and "cannot see what over-fits" in what
    _, what = scoring_batches(train_glob, 1024, 2048, n, SEQ, seen=None)
    assert "is unknown" in what
