"""A participant's own training script, as the tests picture one: its own model (names golfpack
has never seen, an MLP as wide as the vocabulary, an untied head), its own reader of the
challenge's shard format, its own loop, val_bpb by the challenge's byte accounting, and the
challenge's log lines. Its export is golfpack's: four API calls where an int8 + zlib export was.

    SEED=1337 DATA_PATH=... TOKENIZER_PATH=... python train_gpt.py
"""
from __future__ import annotations

import glob
import hashlib
import math
import os
import time

import numpy as np
import sentencepiece as spm
import torch
import torch.nn.functional as F
from torch import nn

import golfpack

VOCAB, DIM, SEQ, BATCH = 1024, 64, 128, 4
STEPS = int(os.environ.get("ITERATIONS", "16"))


class Mixer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn_in = nn.Linear(DIM, 3 * DIM, bias=False)
        self.attn_out = nn.Linear(DIM, DIM, bias=False)
        self.ff_in = nn.Linear(DIM, VOCAB, bias=False)
        self.ff_out = nn.Linear(VOCAB, DIM, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.attn_in(F.rms_norm(x, (d,))).view(b, t, 3, 4, d // 4).permute(2, 0, 3, 1, 4)
        x = x + self.attn_out(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d))
        return x + self.ff_out(F.relu(self.ff_in(F.rms_norm(x, (d,)))).square())


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.token_table = nn.Embedding(VOCAB, DIM)
        self.stack = nn.ModuleList(Mixer() for _ in range(2))
        self.readout = nn.Linear(DIM, VOCAB, bias=False)

    def token_losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.token_table(x)
        for mixer in self.stack:
            h = mixer(h)
        logits = self.readout(F.rms_norm(h, (DIM,)))
        return F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.token_losses(x, y).mean()


def load_shard(path: str) -> torch.Tensor:
    header = np.fromfile(path, dtype="<i4", count=256)
    assert header[0] == 20240520 and header[1] == 1, path
    return torch.from_numpy(np.fromfile(path, dtype="<u2", offset=1024, count=int(header[2])).astype(np.int64))


def train_batches(pattern: str):
    while True:
        for path in sorted(glob.glob(pattern)):
            tokens = load_shard(path)
            for i in range(0, tokens.numel() - BATCH * SEQ - 1, BATCH * SEQ):
                chunk = tokens[i : i + BATCH * SEQ + 1]
                yield chunk[:-1].view(BATCH, SEQ), chunk[1:].view(BATCH, SEQ)


def byte_luts(sp: spm.SentencePieceProcessor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = sp.vocab_size()
    base, space, boundary = np.zeros(n, np.int64), np.zeros(n, bool), np.ones(n, bool)
    for i in range(n):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        boundary[i] = False
        if sp.is_byte(i):
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith("\u2581"):
            space[i], piece = True, piece[1:]
        base[i] = len(piece.encode("utf-8"))
    return torch.from_numpy(base), torch.from_numpy(space), torch.from_numpy(boundary)


@torch.no_grad()
def val_bpb(model: Net, pattern: str, tokenizer: str) -> tuple[float, float]:
    tokens = torch.cat([load_shard(p) for p in sorted(glob.glob(pattern))])
    usable = (tokens.numel() - 1) // SEQ * SEQ
    x, y = tokens[:usable].view(-1, SEQ), tokens[1 : usable + 1].view(-1, SEQ)
    base, space, boundary = byte_luts(spm.SentencePieceProcessor(model_file=tokenizer))
    model.eval()
    loss = sum(float(model.token_losses(x[i : i + 8], y[i : i + 8]).double().sum()) for i in range(0, x.shape[0], 8))
    nbytes = float((base[y] + (space[y] & ~boundary[x]).long()).double().sum())
    return loss / y.numel(), loss / y.numel() / math.log(2.0) * y.numel() / nbytes


def main() -> None:
    seed, data, tokenizer = int(os.environ["SEED"]), os.environ["DATA_PATH"], os.environ["TOKENIZER_PATH"]
    torch.manual_seed(seed)
    log = open(f"train_seed{seed}.log", "w")

    def log0(line: str) -> None:
        print(line)
        log.write(line + "\n")

    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batches = train_batches(f"{data}/fineweb_train_*.bin")
    t0 = time.perf_counter()
    for step in range(1, STEPS + 1):
        x, y = next(batches)
        opt.zero_grad()
        loss = model(x, y)
        loss.backward()
        opt.step()
        log0(f"step:{step}/{STEPS} train_loss:{loss.item():.4f} train_time:{1000 * (time.perf_counter() - t0):.0f}ms")
    calib = golfpack.calibrate(model, batches, hessian_tokens=4096, sensitivity_tokens=1024, score_tokens=1024)
    log0(f"calibration: {calib.tokens} training tokens in {calib.seconds:.2f}s")
    blob = golfpack.compress(model, calib, golfpack.budget(cap=int(os.environ.get("CAP", "16000000"))), log=log0)
    path = f"final_model_seed{seed}.gpak"
    with open(path, "wb") as f:
        f.write(blob)
    code_bytes = os.path.getsize(__file__)
    log0(f"Serialized model golfpack: {len(blob)} bytes ({path} sha256:{hashlib.sha256(blob).hexdigest()})")
    log0(f"Code size: {code_bytes} bytes")
    log0(f"Total submission size golfpack: {len(blob) + code_bytes} bytes")
    fresh = Net()
    golfpack.decompress(path, fresh)
    loss, bpb = val_bpb(fresh, f"{data}/fineweb_val_*.bin", tokenizer)
    log0(f"final_golfpack_roundtrip_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f}")
    log0(f"final_golfpack_roundtrip_full val_loss:{loss!r} val_bpb:{bpb!r}")
    log.close()


if __name__ == "__main__":
    main()
