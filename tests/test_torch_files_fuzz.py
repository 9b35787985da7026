"""A structure-aware fuzzer for the torch-file formats: genuine checkpoints (with a resume state)
and calibration files, mutated field by field (types, sizes, NaN and inf, nesting, sharing,
views), then read by their one reader each. Every mutant is either read or refused with a
ValueError or OSError (one line at the CLI), never another exception, and within a bounded time."""
from __future__ import annotations

import copy
import os
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from golfpack.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from golfpack.trainer.calibration_files import load_hessians, save_hessians
from golfpack.trainer.config import TrainConfig
from golfpack.trainer.resume import read_resume

from .conftest import make_tiny

MAX_SECONDS = 2.0
SEEDED = "FUZZ_EXAMPLES" not in os.environ  # CI: the same examples every run; FUZZ_EXAMPLES=N explores at random


@pytest.fixture(scope="module")
def genuine(tmp_path_factory):
    """A checkpoint as the trainer writes one (its resume state written by its own writer), and a
    calibration file with q/k/v sharing one Hessian as the calibration writes it."""
    from golfpack.trainer.resume import ResumeState

    d = tmp_path_factory.mktemp("torchfiles")
    m = make_tiny(2)
    opt = torch.optim.Adam(m.parameters())
    m(torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 8, dtype=torch.long)).backward()
    opt.step()
    resume = ResumeState({k: v.detach().clone() for k, v in m.state_dict().items()}, [opt.state_dict()],
                         {"file_idx": 0, "pos": 5}, 3, 12.5, False).to_dict()
    save_checkpoint(d / "c.pt", Checkpoint(m.state_dict(), m.cfg.to_dict(), TrainConfig().to_dict(), {"step": 3},
                                           resume))
    h = torch.eye(64)
    save_hessians(d / "h.pt", {"blocks.0.attn.c_q.weight": h, "blocks.0.attn.c_k.weight": h,
                               "blocks.0.mlp.fc.weight": torch.eye(64) * 2})
    return d


def paths(tree, prefix=()):
    """Every place in a loaded tree, as key paths."""
    yield prefix
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from paths(v, (*prefix, i))


def replace_at(tree, path, value):
    if not path:
        return value
    node = tree
    for k in path[:-1]:
        node = node[k]
    if isinstance(node, tuple):
        return tree  # tuples are leaves of the mutation (rebuilding them changes nothing the reader sees)
    node[path[-1]] = value
    return tree


def mutants(original):
    """A strategy of values to put somewhere in the tree: wrong types, extremes, nesting,
    sharing and views."""
    scalar = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                       st.text(max_size=20), st.just("\x1b[2J"), st.just(float("inf")))
    tensor = st.sampled_from([torch.zeros(0), torch.full((3,), float("nan")), torch.ones(1).expand(1000, 1000),
                              torch.arange(10.0)[2:], torch.ones(4, 4).t(), torch.zeros(2, dtype=torch.int64)])
    nested = st.recursive(scalar, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                          max_leaves=8)
    shared = st.builds(lambda n: (lambda x: [x, x])(list(range(n))), st.integers(0, 50))
    deep = st.builds(lambda n: (lambda f: f(f, n))(lambda f, k: [] if k == 0 else [f(f, k - 1)]), st.integers(30, 40))
    return st.one_of(scalar, tensor, nested, shared, deep)


def read_or_refuse(read, path) -> None:
    t0 = time.process_time()
    try:
        read(path)
    except (ValueError, OSError):
        pass
    assert time.process_time() - t0 < MAX_SECONDS


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 60)), deadline=None, derandomize=SEEDED, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_mutated_checkpoint_is_read_or_refused(genuine, tmp_path_factory, data):
    raw = torch.load(genuine / "c.pt", weights_only=True)
    where = data.draw(st.sampled_from(list(paths(raw))[1:]), label="where")
    mutant = replace_at(copy.deepcopy(raw), where, data.draw(mutants(raw), label="value"))
    path = tmp_path_factory.mktemp("m") / "m.pt"
    torch.save(mutant, path)

    def read(p):
        ck = load_checkpoint(p)
        if ck.resume:
            read_resume(ck.resume)
        ck.build_model()
        ck.train_seq_len

    read_or_refuse(read, path)


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 40)), deadline=None, derandomize=SEEDED, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_mutated_calibration_file_is_read_or_refused(genuine, tmp_path_factory, data):
    raw = torch.load(genuine / "h.pt", weights_only=True)
    where = data.draw(st.sampled_from(list(paths(raw))), label="where")
    mutant = replace_at(dict(raw), where, data.draw(mutants(raw), label="value"))
    path = tmp_path_factory.mktemp("h") / "h.pt"
    torch.save(mutant, path)
    read_or_refuse(load_hessians, path)


def test_the_genuine_files_are_read(genuine):
    ck = load_checkpoint(genuine / "c.pt")
    assert read_resume(ck.resume).step == 3 and ck.train_seq_len == TrainConfig().train_seq_len
    hs = load_hessians(genuine / "h.pt")
    assert hs["blocks.0.attn.c_q.weight"] is hs["blocks.0.attn.c_k.weight"]  # shared as written, allowed
