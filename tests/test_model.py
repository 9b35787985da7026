import pytest
import torch

from golfpack.model import GPT, GPTConfig
from golfpack.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

from .conftest import TINY, make_tiny

# Names and shapes of the challenge's train_gpt.py baseline, per block and global.
BLOCK_SHAPES = {
    "attn_scale": (512,), "mlp_scale": (512,), "resid_mix": (2, 512), "attn.q_gain": (8,),
    "attn.c_q.weight": (512, 512), "attn.c_k.weight": (256, 512), "attn.c_v.weight": (256, 512),
    "attn.proj.weight": (512, 512), "mlp.fc.weight": (1024, 512), "mlp.proj.weight": (512, 1024),
}


def test_baseline_parameter_count_and_names():
    model = GPT(GPTConfig())
    assert sum(p.numel() for p in model.parameters()) == 17_059_912
    expected = {"tok_emb.weight": (1024, 512), "skip_weights": (4, 512)}
    for i in range(9):
        expected.update({f"blocks.{i}.{k}": v for k, v in BLOCK_SHAPES.items()})
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected


def test_config_inferred_from_state_dict():
    for cfg in (GPTConfig(), TINY, GPTConfig(num_layers=3, model_dim=96, num_heads=6, num_kv_heads=3, mlp_mult=3)):
        assert GPTConfig.from_state_dict(GPT(cfg).state_dict()) == cfg


def test_challenge_style_state_dict_loads_and_round_trips(tmp_path):
    """The challenge saves tok_emb in bf16 and the rest in fp32; that file loads strictly."""
    model = make_tiny(1)
    sd = model.state_dict()
    sd["tok_emb.weight"] = sd["tok_emb.weight"].bfloat16()
    torch.save(sd, tmp_path / "final_model.pt")
    ckpt = load_checkpoint(tmp_path / "final_model.pt")
    assert ckpt.model_config == TINY.to_dict()
    loaded = ckpt.build_model()
    assert torch.equal(loaded.tok_emb.weight, sd["tok_emb.weight"].float())
    save_checkpoint(tmp_path / "gp.pt", Checkpoint(loaded.state_dict(), loaded.cfg.to_dict()))
    again = load_checkpoint(tmp_path / "gp.pt").build_model()
    for (k, a), b in zip(loaded.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


def test_forward_loss_matches_logits():
    model = make_tiny(2)
    x = torch.randint(0, TINY.vocab_size, (2, 16))
    y = torch.randint(0, TINY.vocab_size, (2, 16))
    loss = model(x, y)
    logits = model.logits(x)
    assert logits.shape == (2, 16, TINY.vocab_size)
    assert logits.abs().max() <= TINY.logit_softcap
    ref = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
    assert torch.allclose(loss, ref)


def test_weight_fn_changes_forward():
    model = make_tiny(3)
    x = torch.randint(0, TINY.vocab_size, (1, 8))
    before = model.logits(x)
    model.blocks[0].mlp.fc.weight_fn = lambda w: torch.zeros_like(w)
    hooked = model.logits(x)
    model.blocks[0].mlp.fc.weight_fn = None
    with torch.no_grad():
        model.blocks[0].mlp.fc.weight.zero_()
    assert not torch.allclose(before, hooked) and torch.equal(hooked, model.logits(x))  # exactly that weight, changed


def test_a_renamed_key_shows_both_sides_under_the_files_name(tmp_path):
    """The unexpected key (the new name) is shown beside the missing one, under the file's name."""
    from golfpack.model.checkpoint import CheckpointError, load_checkpoint

    from .conftest import make_tiny

    state = make_tiny().state_dict()
    state["blocks.1.mlp.out.weight"] = state.pop("blocks.1.mlp.proj.weight")
    path = tmp_path / "renamed.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path).build_model()
    assert str(e.value).startswith(f"{path}: ") and "blocks.1.mlp.proj.weight" in str(e.value)
    assert "Unexpected key(s)" in str(e.value) and "blocks.1.mlp.out.weight" in str(e.value)
