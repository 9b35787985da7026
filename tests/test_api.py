"""The public API (``import golfpack``) on a participant's own model: a class golfpack has never
seen (its own names, an MLP as wide as the vocabulary, an untied head or a head tied by a
matmul), its own shard loader and training loop; and ``build`` reaching the same bytes
through it."""
from __future__ import annotations

import glob

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import golfpack
from golfpack.codec.decoders.container import ContainerError
from golfpack.codec.decoders.config import EMBEDDING, HEAD_PART, LOOKUP_PART, MATRIX, SMALL
from golfpack.model.anatomy import probe_output_layers
from golfpack.trainer.roles import tensor_roles

VOCAB, DIM, SEQ = 1024, 64, 128


class Mix(nn.Module):
    """Attention and an MLP whose hidden width is the vocabulary's (a trap for any rule that
    finds the head by its width)."""

    def __init__(self) -> None:
        super().__init__()
        self.wqkv = nn.Linear(DIM, 3 * DIM, bias=False)
        self.wo = nn.Linear(DIM, DIM, bias=False)
        self.up = nn.Linear(DIM, VOCAB, bias=False)
        self.down = nn.Linear(VOCAB, DIM, bias=False)
        self.gain = nn.Parameter(torch.ones(DIM))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.wqkv(F.rms_norm(x, (d,))).view(b, t, 3, 4, d // 4).permute(2, 0, 3, 1, 4)
        x = x + self.wo(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d))
        return x + self.gain * self.down(F.gelu(self.up(F.rms_norm(x, (d,)))))


class Participant(nn.Module):
    """No ``lm_head``, no ``logits``, no ``vocab_size``: only ``forward(x, y) -> loss``."""

    def __init__(self, tied: bool) -> None:
        super().__init__()
        self.wte = nn.Embedding(VOCAB, DIM)
        if tied:
            nn.init.normal_(self.wte.weight, std=0.05)
        self.layers = nn.ModuleList(Mix() for _ in range(2))
        self.tied = tied
        self.out_proj = None if tied else nn.Linear(DIM, VOCAB, bias=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.wte(x)
        for layer in self.layers:
            h = layer(h)
        h = F.rms_norm(h, (DIM,))
        logits = h @ self.wte.weight.T if self.tied else self.out_proj(h)
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())


def my_loader(pattern: str, batch: int, seq: int):
    """A participant's own reader of the challenge's shard format (header of 256 int32, uint16 tokens)."""
    for path in sorted(glob.glob(pattern)):
        header = np.fromfile(path, dtype="<i4", count=256)
        tokens = torch.from_numpy(np.fromfile(path, dtype="<u2", offset=1024, count=int(header[2])).astype(np.int64))
        for i in range(0, tokens.numel() - batch * seq - 1, batch * seq):
            chunk = tokens[i : i + batch * seq + 1]
            yield chunk[:-1].view(batch, seq), chunk[1:].view(batch, seq)


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def trained_own(request, train_glob) -> Participant:
    torch.manual_seed(0)
    model = Participant(tied=request.param)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step, (x, y) in zip(range(12), my_loader(train_glob, 4, SEQ)):
        opt.zero_grad()
        model(x, y).backward()
        opt.step()
    return model


def test_roles_come_from_the_modules_not_the_names(trained_own):
    roles = tensor_roles(trained_own)
    layers = probe_output_layers(trained_own)
    if trained_own.tied:
        assert layers.tied == ("wte.weight",) and layers.heads == ()
    else:
        assert layers.tied == () and layers.heads == ("out_proj.weight",)  # not layers.1.up, as wide and later-named
        assert roles["out_proj.weight"] == EMBEDDING
    assert roles["wte.weight"] == EMBEDDING
    assert roles["layers.1.up.weight"] == MATRIX and roles["layers.0.gain"] == SMALL


def test_calibrate_reads_the_scripts_own_batches_in_order(trained_own, train_glob):
    grads = [p.grad for p in trained_own.parameters()]  # the script's own, from its last step
    calib = golfpack.calibrate(trained_own, my_loader(train_glob, 4, SEQ), hessian_tokens=2048,
                               sensitivity_tokens=1024, score_tokens=1024)
    linears = {f"{n}.weight" for n, m in trained_own.named_modules() if isinstance(m, nn.Linear)}
    assert set(calib.hessians) == linears | ({"wte.weight"} if trained_own.tied else set())
    if trained_own.tied:  # the tied head's Hessian is of the final hidden states
        assert calib.hessians["wte.weight"].shape == (DIM, DIM)
    parts = {f"wte.weight{p}" for p in (LOOKUP_PART, HEAD_PART)} if trained_own.tied else set()  # its two roles
    assert set(calib.sensitivity) == {n for n, p in trained_own.named_parameters() if p.ndim == 2} | parts
    assert sum(x.numel() for x, _ in calib.score) == 1024 and calib.tokens == 4096 and calib.seconds > 0
    assert all(p.grad is g for p, g in zip(trained_own.parameters(), grads))  # left as they were


def test_compress_fills_the_budget_and_decompress_gives_the_weights_back(trained_own, train_glob):
    calib = golfpack.calibrate(trained_own, my_loader(train_glob, 4, SEQ), hessian_tokens=2048,
                               sensitivity_tokens=1024, score_tokens=1024)
    before = {k: v.clone() for k, v in trained_own.state_dict().items()}
    params = sum(v.numel() for v in before.values())
    budget = int(3.5 * params / 8)
    lines: list[str] = []
    data = golfpack.compress(trained_own, calib, budget, log=lines.append)
    print("\n".join(lines))
    chosen = next(ln for ln in lines if ln.startswith("fill: chosen: "))
    assert len(data) <= budget and (len(data) >= budget * 0.999 or "standard errors" in chosen)  # fill, or a guard
    assert all(torch.equal(before[k], v) for k, v in trained_own.state_dict().items())  # left as it was

    state = golfpack.decompress(data)
    assert set(state) == set(before) and all(state[k].shape == before[k].shape for k in before)
    fresh = Participant(tied=trained_own.tied)
    assert golfpack.decompress(data, fresh).keys() == state.keys()
    assert all(torch.equal(fresh.state_dict()[k], state[k].to(before[k].dtype)) for k in state)
    x, y = next(my_loader(train_glob, 4, SEQ))
    with torch.no_grad():
        float_loss, coded_loss = float(trained_own(x, y)), float(fresh(x, y))
    print(f"float loss {float_loss:.4f}, coded at 3.5 bits/param {coded_loss:.4f}")
    assert abs(coded_loss - float_loss) < 0.1


def test_compress_without_calibration_codes_as_the_rules_say(trained_own, tmp_path):
    data = golfpack.compress(trained_own, pipeline="*=fp16 -> zstd")
    state = golfpack.decompress(data)
    assert all(torch.equal(state[k], v.half()) for k, v in trained_own.state_dict().items())
    path = tmp_path / "m.gpak"
    path.write_bytes(data)
    assert golfpack.decompress(path).keys() == state.keys()
    with pytest.raises(golfpack.BudgetError, match="over the budget of 100"):
        golfpack.compress(trained_own, pipeline="*=fp16 -> zstd", budget=100)


def test_compress_is_builds_path_to_the_byte(trained, train_glob, tmp_path):
    """A challenge checkpoint (a plain state dict) built by ``golfpack build`` and compressed by
    the API from the same weights and calibration (the same token windows: build reads a plain
    state dict at the challenge's seq_len 1024, and groups calibration rows eight at a time)
    are the same bytes."""
    from golfpack.codec.spec import load_spec
    from golfpack.model.builders import GPT_BUILDER, build_model, model_meta
    from golfpack.model.checkpoint import load_checkpoint
    from golfpack.packer.build import BuildOptions, build, model_frame_size, weights_budget
    from golfpack.packer.runtime.artifact import WEIGHTS, open_artifact

    state = load_checkpoint(trained).state_dict
    plain = tmp_path / "final_model.pt"
    torch.save(state, plain)
    options = BuildOptions(budget=200_000, calib=train_glob, calib_tokens=2048, sens_tokens=2048, score_tokens=2048)
    art = tmp_path / "a.pyz"
    build(plain, "default", art, options, echo=lambda m: None, progress=False)
    built = open_artifact(art.read_bytes()).members[WEIGHTS]

    config = load_checkpoint(plain).model_config
    model = build_model(GPT_BUILDER, config)
    model.load_state_dict(state)
    calib = golfpack.calibrate(model, golfpack.shard_batches(train_glob, 1024, batch_seqs=2), hessian_tokens=2048,
                               sensitivity_tokens=2048, score_tokens=2048)
    budget = weights_budget(options.budget, model_frame_size(load_spec("default"), model, GPT_BUILDER, None,
                                                             options.budget))
    data = golfpack.compress(model, calib, budget, state_dict=state, meta=model_meta(GPT_BUILDER, config))
    assert data == built


def test_budget_is_the_cap_less_the_script(tmp_path):
    script = tmp_path / "train_gpt.py"
    script.write_text("print('hi')\n")
    assert golfpack.budget(script) == 16_000_000 - 12
    assert golfpack.budget(script, cap=1000) == 988
    with pytest.raises(golfpack.BudgetError, match="the whole cap"):
        golfpack.budget(script, cap=12)


def test_bad_input_is_refused_in_one_line(trained_own):
    with pytest.raises(golfpack.BudgetError, match="fills a budget"):
        golfpack.compress(trained_own)
    with pytest.raises(ValueError, match=r"a batch must be \(x, y\)"):
        golfpack.calibrate(trained_own, [(torch.zeros(2, 8), torch.zeros(2, 8))], hessian_tokens=8)
    with pytest.raises(ValueError, match="ran out after 0"):
        golfpack.calibrate(trained_own, [], hessian_tokens=8)
    with pytest.raises(ValueError, match="hessian_tokens must be"):
        golfpack.calibrate(trained_own, [], hessian_tokens=-1)
    with pytest.raises(ContainerError):
        golfpack.decompress(b"GPAK" + bytes(60))


def test_a_freed_cast_of_the_embedding_is_not_mistaken_for_a_later_tensor():
    """A cast of the embedding (w.to(dtype) under autocast) is freed after its matmul, and its
    id can be reused: only the tensor its weak reference still names counts as the embedding."""
    import weakref

    from golfpack.model.anatomy import EmbeddingOutputs

    model = Participant(tied=True)
    mode = EmbeddingOutputs(model, lambda name, h: None)
    cast, later = torch.zeros(2), torch.zeros(2)
    mode.derived[id(later)] = (weakref.ref(cast), "wte.weight")  # as if `later` had reused a freed cast's id
    assert mode._name(later) is None and mode._name(model.wte.weight) == "wte.weight"
    mode.derived[id(cast)] = (weakref.ref(cast), "wte.weight")
    assert mode._name(cast) == "wte.weight"


class WithBuffers(nn.Module):
    """A model as participants write them: a bias, a convolution (a 3-D weight), a LayerNorm,
    and buffers in its state dict: a bool mask, an integer step counter, rotary frequencies."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(256, 32)
        self.fc = nn.Linear(32, 32)
        self.conv = nn.Conv1d(32, 32, 3, padding=2)
        self.norm = nn.LayerNorm(32)
        self.head = nn.Linear(32, 256, bias=False)
        self.register_buffer("mask", torch.ones(8, 8, dtype=torch.bool).tril())
        self.register_buffer("steps", torch.tensor(5))
        self.register_buffer("inv_freq", 1.0 / 10000 ** (torch.arange(0, 32, 2).float() / 32))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.emb(x)
        h = h + self.conv(h.transpose(1, 2))[..., : x.shape[1]].transpose(1, 2)
        h = self.norm(F.gelu(self.fc(h))) * self.inv_freq.repeat(2)
        return F.cross_entropy(self.head(h).reshape(-1, 256), y.reshape(-1))


def test_buffers_of_any_dtype_come_back_exactly():
    torch.manual_seed(0)
    model = WithBuffers()
    roles = tensor_roles(model)
    assert roles["mask"] == roles["steps"] == roles["inv_freq"] == "buffer" and roles["conv.weight"] == SMALL
    batches = [(torch.randint(0, 256, (4, 16)), torch.randint(0, 256, (4, 16))) for _ in range(40)]
    cal = golfpack.calibrate(model, batches, hessian_tokens=1024, sensitivity_tokens=512, score_tokens=512)
    state = golfpack.decompress(golfpack.compress(model, cal, 60_000), WithBuffers())
    for name in ("mask", "steps", "inv_freq"):
        assert state[name].dtype == model.state_dict()[name].dtype and torch.equal(state[name], model.state_dict()[name])


class SharedHead(nn.Module):
    """A head tied to the embedding by sharing its parameter (nanoGPT's way): the state dict holds
    the same tensor under two names."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(256, 32)
        self.fc = nn.Linear(32, 32)
        self.head = nn.Linear(32, 256, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.head(F.gelu(self.fc(self.emb(x)))).reshape(-1, 256), y.reshape(-1))


def test_a_tensor_shared_by_two_names_is_coded_once():
    from golfpack.codec.decoders.container import read_container

    torch.manual_seed(0)
    model = SharedHead()
    batches = [(torch.randint(0, 256, (4, 16)), torch.randint(0, 256, (4, 16))) for _ in range(40)]
    cal = golfpack.calibrate(model, batches, hessian_tokens=1024, sensitivity_tokens=512, score_tokens=512)
    data = golfpack.compress(model, cal, 30_000)
    container = read_container(data)
    assert [e.meta.name for e in container.entries if e.meta.name.endswith("weight")] == ["emb.weight", "fc.weight"]
    assert container.meta["aliases"] == {"head.weight": "emb.weight"}
    again = SharedHead()
    state = golfpack.decompress(data, again)
    assert torch.equal(state["head.weight"], state["emb.weight"]) and again.head.weight is again.emb.weight
    from golfpack.codec.registry import decoder_table
    from golfpack.packer.ledger import format_ledger, model_file_ledger

    shown = format_ledger(model_file_ledger("m.gpak", data, 16_000_000, decoder_table()))
    assert "aliases (coded once, given back under both names): head.weight = emb.weight" in shown


def test_a_model_that_returns_more_than_its_loss_is_told_so():
    class Both(SharedHead):
        def forward(self, x, y):
            return self.head(self.emb(x)), super().forward(x, y)

    batches = [(torch.randint(0, 256, (4, 16)), torch.randint(0, 256, (4, 16))) for _ in range(4)]
    with pytest.raises(ValueError, match=r"must return the mean loss .* got tuple"):
        golfpack.calibrate(Both(), batches, hessian_tokens=64, sensitivity_tokens=64, score_tokens=0)


def test_a_model_whose_forward_takes_only_the_inputs_is_told_what_golfpack_asks():
    class LogitsOnly(SharedHead):
        def forward(self, x):
            return self.head(self.emb(x))

    def batches():  # nothing is read before the model is refused
        raise AssertionError("a batch was read")
        yield

    with pytest.raises(ValueError, match=r"model.forward must take \(x, y\) and return the mean loss: too many"):
        golfpack.calibrate(LogitsOnly(), batches(), hessian_tokens=64, sensitivity_tokens=64, score_tokens=0)


def test_a_wrapped_model_is_coded_under_its_plain_names():
    """As a script holds it (compiled, data-parallel): calibrated, coded and loaded as the plain
    module, so the file loads into the plain model and into a wrapped one alike."""
    torch.manual_seed(0)
    plain = WithBuffers()
    wrapped = torch.compile(nn.DataParallel(plain))  # compiling is lazy: nothing here runs it
    batches = [(torch.randint(0, 256, (4, 16)), torch.randint(0, 256, (4, 16))) for _ in range(40)]
    cal = golfpack.calibrate(wrapped, batches, hessian_tokens=1024, sensitivity_tokens=512, score_tokens=512)
    data = golfpack.compress(wrapped, cal, 60_000)
    assert list(golfpack.decompress(data, WithBuffers())) == list(plain.state_dict())
    again = WithBuffers()
    golfpack.decompress(data, torch.compile(again))
    assert torch.equal(again.mask, plain.mask)
