"""The rate-distortion panel: small models that golfpack's compression claims must hold on.

    python bench/panel.py --challenge-code PATH/train_gpt.py --out runs/panel [--seconds 300] [--only a,b]

The models differ the way participants' models do (issue 37: a panel kinder than the models
outside it flatters the fill). The challenge's own ``GPT`` class and optimizers, imported from
its ``train_gpt.py`` (openai/parameter-golf; pass your copy's path: golfpack ships none of it),
each recipe trained as the challenge's ``main`` does (:data:`CHALLENGE_PANEL`):

* ``challenge-muon``: 4 layers x 256, tied embedding, the challenge's optimizer split (Muon for
  block matrices, Adam for the embedding and the control tensors, its learning rates and
  wall-clock warmdown);
* ``challenge-adamw``: the same class, plain AdamW (weight decay 0.1) on every parameter;
* ``challenge-adamw-nowd``: the same, without weight decay (rare tokens' rows then stay where
  they started);
* ``challenge-untied``: 6 layers x 192, MLP x3, an *untied* head (Adam at the challenge's
  ``head_lr``), Muon;
* ``challenge-short`` and ``challenge-long``: ``challenge-muon`` trained a quarter and twice as long.

And golfpack's trainer:

* ``golfpack``: its ``cpu_small`` preset (the demo's model);
* ``looplm``: another architecture, docs/models.md's depth-recurrent ``LoopLM`` (shared blocks,
  gated attention, names unlike the baseline).

Each is trained for ``--seconds`` (times its recipe's factor) on the CPU on the shared FineWeb
training documents and saved with its GPTQ calibration beside it (``<name>/final.pt`` +
``final.calib.pt``), ready for ``golfpack bench rd``. The challenge's models are plain state
dicts (their ``final_model.pt`` format), which golfpack reads as its GPT. No recipe is chosen
for how the fill does on it: each is a setting participants use.
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import time
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import torch

from golfpack.model.checkpoint import TOKENS_SEEN_KEY, Checkpoint, save_checkpoint
from golfpack.model.config import GPTConfig
from golfpack.model.gpt import GPT as GolfpackGPT
from golfpack.model.shards import TokenStream
from golfpack.trainer.calibration_files import calib_path, collect_hessians, collect_sensitivity, save_hessians, sens_path
from golfpack.trainer.config import TrainConfig, load_config, set_builder
from golfpack.trainer.tokenize import iter_documents, tokenize_to_shards
from golfpack.trainer.train import train

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SHAPE = dict(vocab_size=1024, num_layers=4, model_dim=256, num_heads=4, num_kv_heads=2, mlp_mult=2)
SEQ_LEN, BATCH_TOKENS, CALIB_TOKENS, SENS_TOKENS = 256, 4096, 65_536, 32_768


def load_challenge(path: Path):
    """The challenge's ``train_gpt.py`` as a module (its ``main`` is not run)."""
    spec = importlib.util.spec_from_file_location("challenge_train_gpt", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class ChallengeRecipe:
    """One model of the challenge's ``GPT`` class: its shape and how it is trained."""

    shape: dict = field(default_factory=lambda: dict(SHAPE))
    tie: bool = True
    muon: bool = True  # the challenge's split; False: AdamW on every parameter
    weight_decay: float = 0.1  # AdamW's
    time: float = 1.0  # times --seconds


CHALLENGE_PANEL = {
    "challenge-muon": ChallengeRecipe(),
    "challenge-adamw": ChallengeRecipe(muon=False),
    "challenge-adamw-nowd": ChallengeRecipe(muon=False, weight_decay=0.0),
    "challenge-untied": ChallengeRecipe({**SHAPE, "num_layers": 6, "model_dim": 192, "mlp_mult": 3}, tie=False),
    "challenge-short": ChallengeRecipe(time=0.25),
    "challenge-long": ChallengeRecipe(time=2.0),
}


def challenge_optimizers(tg, model, recipe: ChallengeRecipe) -> list[torch.optim.Optimizer]:
    """The challenge's split (train_gpt.py ``main``: the embedding at ``tied_embed_lr`` or, untied,
    ``embed_lr``, the head at ``head_lr``), or AdamW on every parameter."""
    if not recipe.muon:
        return [torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=recipe.weight_decay)]
    hp = tg.Hyperparameters
    blocks = list(model.blocks.named_parameters())
    control = lambda n: any(p in n for p in tg.CONTROL_TENSOR_NAME_PATTERNS)  # noqa: E731
    matrices = [p for n, p in blocks if p.ndim == 2 and not control(n)]
    scalars = [p for n, p in blocks if p.ndim < 2 or control(n)] + [model.skip_weights]
    adam = dict(betas=(hp.beta1, hp.beta2), eps=hp.adam_eps)
    opts = [torch.optim.Adam([model.tok_emb.weight], lr=hp.tied_embed_lr if recipe.tie else hp.embed_lr, **adam),
            tg.Muon(matrices, lr=hp.matrix_lr, momentum=hp.muon_momentum, backend_steps=hp.muon_backend_steps),
            torch.optim.Adam(scalars, lr=hp.scalar_lr, **adam)]
    if model.lm_head is not None:
        opts.insert(1, torch.optim.Adam([model.lm_head.weight], lr=hp.head_lr, **adam))
    return opts


def train_challenge(tg, train_glob: str, seconds: float, recipe: ChallengeRecipe,
                    seed: int = 1337) -> tuple[dict[str, torch.Tensor], int]:
    """The challenge's training loop on the CPU, wall-clock capped with its linear warmdown over
    the last 45% of the time, fp32; returns the state dict and the tokens it trained on."""
    torch.manual_seed(seed)
    model = tg.GPT(**recipe.shape, tie_embeddings=recipe.tie, tied_embed_init_std=0.005, logit_softcap=30.0,
                   rope_base=10000.0, qk_gain_init=1.5)
    opts = challenge_optimizers(tg, model, recipe)
    for opt in opts:
        for g in opt.param_groups:
            g["base_lr"] = g["lr"]
    stream = TokenStream(train_glob, SHAPE["vocab_size"])
    start, step = time.perf_counter(), 0
    while (elapsed := time.perf_counter() - start) < seconds:
        frac = elapsed / seconds
        mul = 1.0 if frac < 0.55 else max((1.0 - frac) / 0.45, 0.0)
        for opt in opts:
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * mul
        chunk = stream.take(BATCH_TOKENS + 1).to(torch.int64)
        x, y = chunk[:-1].reshape(-1, SEQ_LEN), chunk[1:].reshape(-1, SEQ_LEN)
        loss = model(x, y)
        loss.backward()
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
        step += 1
        if step % 50 == 0:
            print(f"  step {step} loss {loss.item():.4f} ({elapsed:.0f}s)", flush=True)
    print(f"  {step} steps")
    return {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}, step * BATCH_TOKENS


def save_plain(state: dict[str, torch.Tensor], tokens_seen: int, out: Path, train_glob: str) -> Path:
    """The challenge's ``final_model.pt`` (a plain state dict) and golfpack's calibration of it;
    the checkpoint says how many tokens the run read, so the closed loop's log can say whether
    its scoring tokens were trained on."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "final.pt"
    save_checkpoint(path, Checkpoint(state, GPTConfig.from_state_dict(state).to_dict(),
                                     train_config={"train_seq_len": SEQ_LEN, "train_files": train_glob},
                                     meta={"source": "challenge train_gpt.py GPT", TOKENS_SEEN_KEY: tokens_seen}))
    model = GolfpackGPT(GPTConfig.from_state_dict(state))
    model.load_state_dict(state)
    save_hessians(calib_path(path), collect_hessians(model, train_glob, CALIB_TOKENS, SEQ_LEN))
    save_hessians(sens_path(path), collect_sensitivity(model, train_glob, SENS_TOKENS, SEQ_LEN, skip=CALIB_TOKENS))
    return path


def train_golfpack(out: Path, train_glob: str, seconds: float, model: str | None = None) -> Path:
    """golfpack's trainer with the ``cpu_small`` preset's training settings: its GPT shape, or
    ``model``'s builder with that builder's defaults."""
    base = TrainConfig()
    if model is not None:
        set_builder(base, model, " (panel)")
    else:
        base = load_config(str(files("golfpack.trainer").joinpath("cpu_small.toml")))
    sets = [f"train_files={train_glob}", f"val_files={DATA / 'fineweb' / 'fineweb_val_sp1024_prefix_000000.bin'}",
            f"tokenizer={DATA / 'tokenizers' / 'fineweb_1024_bpe.model'}", f"out_dir={out}",
            f"max_wallclock_seconds={seconds}", "val_max_tokens=65536", "iterations=100000", f"train_seq_len={SEQ_LEN}",
            f"train_batch_tokens={BATCH_TOKENS}", "grad_accum_steps=1", "warmdown_iters=250", "val_loss_every=0", "train_log_every=50",
            f"calib_tokens={CALIB_TOKENS}", f"sens_tokens={SENS_TOKENS}", "device=cpu"]
    return train(load_config(None, sets, base=base), force=True).checkpoint


def looplm_module(out: Path) -> str:
    """docs/models.md's LoopLM written to ``out`` and imported (``module:function``)."""
    from golfpack.model.builders import load_module_file

    text = (ROOT / "docs" / "models.md").read_text(encoding="utf-8")
    for name, body in re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", text, re.S):
        (out / name).write_text(body)
    return f"{load_module_file(out / 'loop_lm.py')}:build"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--challenge-code", required=True, type=Path, help="the challenge's train_gpt.py")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--only", default=None, help="comma-separated model names")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    shards = args.out / "data"
    train_glob = str(shards / "fineweb_train_*.bin")
    if not list(shards.glob("fineweb_train_*.bin")):
        tokenize_to_shards(iter_documents([DATA / "fineweb" / "fineweb_docs_200_raw.jsonl"]),
                           DATA / "tokenizers" / "fineweb_1024_bpe.model", shards)
    only = set(args.only.split(",")) if args.only else None
    want = lambda name: only is None or name in only  # noqa: E731
    if any(want(name) for name in CHALLENGE_PANEL):
        tg = load_challenge(args.challenge_code)
        for name, recipe in CHALLENGE_PANEL.items():
            if want(name):
                seconds = args.seconds * recipe.time
                print(f"{name}: training {seconds:.0f}s")
                state, seen = train_challenge(tg, train_glob, seconds, recipe)
                print(f"  -> {save_plain(state, seen, args.out / name, train_glob)}")
    if want("golfpack"):
        print(f"golfpack: training {args.seconds:.0f}s")
        print(f"  -> {train_golfpack(args.out / 'golfpack', train_glob, args.seconds)}")
    if want("looplm"):
        print(f"looplm: training {args.seconds:.0f}s")
        (args.out / "looplm").mkdir(parents=True, exist_ok=True)
        ref = looplm_module(args.out / "looplm")
        print(f"  -> {train_golfpack(args.out / 'looplm', train_glob, args.seconds, ref)}")


if __name__ == "__main__":
    main()
