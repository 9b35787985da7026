"""The loss-aware allocator: the sensitivities are the estimator they claim to be, and the
closed loop ships the best-scoring contender (never the records' grid when that scores worse),
recorded in the container for ``inspect``. How well the prediction ranks real losses is a
measurement, printed by ``golfpack bench rd`` (docs/benchmarks.md)."""
from __future__ import annotations

import pytest
import torch

from golfpack.codec.allocate import loss_rise
from golfpack.codec.fill import CONTENDERS, fill
from golfpack.codec.pipeline import decode_state_dict
from golfpack.codec.registry import decoder_table
from golfpack.codec.spec import load_spec
from golfpack.model.checkpoint import load_checkpoint
from golfpack.model.scoring import mean_loss
from golfpack.packer.ledger import read_contenders
from golfpack.packer.records.script import contender_score
from golfpack.trainer.calibrate import calib_path, collect_sensitivity, heldout_tokens, load_hessians

SEQ = 128


@pytest.fixture(scope="module")
def setup(trained, train_glob):
    ckpt = load_checkpoint(trained)
    model = ckpt.build_model()
    sens = collect_sensitivity(model, train_glob, 8192, SEQ, skip=2048, progress=False)
    held = heldout_tokens(train_glob, model.vocab_size, 2048 + 8192, 8192 + 1)
    return ckpt, model, sens, held, load_hessians(calib_path(trained))


def test_sensitivities_cover_every_matrix_and_are_non_negative(setup):
    ckpt, model, sens, _, _ = setup
    matrices = {n for n, p in model.named_parameters() if p.ndim == 2}
    assert set(sens) == matrices and all(s.shape == ckpt.state_dict[n].shape for n, s in sens.items())
    assert all(bool((s >= 0).all()) and float(s.sum()) > 0 for s in sens.values())


def test_sensitivity_is_the_scaled_mean_squared_sequence_gradient(setup, train_glob):
    """The estimator, recomputed by hand for two tensors: one gradient per sequence of the
    tokens after ``skip``, squared, averaged, times ``seq_len / 2``."""
    from golfpack.model.shards import TokenStream

    ckpt, model, sens, _, _ = setup
    stream = TokenStream(train_glob, model.vocab_size)
    stream.take(2048)
    names = ["blocks.1.mlp.proj.weight", "tok_emb.weight"]
    acc = {n: torch.zeros_like(sens[n], dtype=torch.float64) for n in names}
    params = dict(model.named_parameters())
    for _ in range(8192 // SEQ):
        chunk = stream.take(SEQ + 1).long()
        model.zero_grad()
        model(chunk[:-1][None], chunk[1:][None]).backward()
        for n in names:
            acc[n] += params[n].grad.double().square()
    model.zero_grad()
    for n in names:
        expected = (acc[n] * SEQ / (2 * (8192 // SEQ))).float()
        assert torch.allclose(sens[n], expected, rtol=1e-5, atol=1e-12), n


def test_the_closed_loop_ships_the_best_contender_within_the_budget(setup, trained):
    ckpt, model, sens, held, hessians = setup
    state = {k: v.float() for k, v in ckpt.state_dict.items()}
    spec = load_spec("default")
    budget = int(4.5 * sum(t.numel() for t in state.values()) / 8)
    score = contender_score(ckpt.build_model(), held, SEQ, decoder_table())
    alloc = fill(state, spec, hessians, budget, {}, sensitivity=sens, score=score)
    print("\n".join(alloc.log))
    losses = {c["name"]: c["loss"] for c in alloc.contenders}
    assert set(losses) == set(CONTENDERS) and len(alloc.container) <= budget
    assert alloc.name == min(losses, key=lambda n: (losses[n], CONTENDERS.index(n)))
    assert losses[alloc.name] <= losses["records"]
    decoded, meta = decode_state_dict(alloc.container)
    assert read_contenders(meta) == (alloc.contenders, alloc.name)
    assert abs(score(alloc.container) - losses[alloc.name]) <= 1e-6  # the record holds the shipped container's score


@pytest.mark.parametrize("meta", [
    {"contenders": [{"name": "fill", "bytes": 1, "loss": 1.0}], "chosen": "evil"},
    {"contenders": [{"name": "evil", "bytes": 1, "loss": 1.0}], "chosen": "evil"},
    {"contenders": [{"name": "fill", "bytes": True, "loss": 1.0}], "chosen": "fill"},
    {"contenders": [{"name": "fill", "bytes": 1, "loss": 1.0}] * 5, "chosen": "fill"},
    {"contenders": "fill", "chosen": "fill"},
])
def test_a_crafted_contenders_record_is_left_out_of_the_ledger(meta):
    assert read_contenders(meta) == ([], "")
