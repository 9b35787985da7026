"""golfpack's ``gptq ... clip=sdclip:K`` is the Parameter Golf records' quantizer, bit for bit.

``record_gptq_quantize_weight`` below is ``gptq_quantize_weight`` copied verbatim from the #1
record of the 10-minute track (openai/parameter-golf, MIT licence,
records/track_10min_16mb/2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611/train_gpt.py).
"""
import pytest
import torch

from golfpack.codec.encoders.intq import GPTQParams
from golfpack.codec.gptq import gptq_quantize


def record_gptq_quantize_weight(w, H, clip_sigmas=3.0, clip_range=63, block_size=128):
    W_orig = w.float().clone()
    rows, cols = W_orig.shape
    H = H.float().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    damp = 0.01 * H.diag().mean()
    H.diagonal().add_(damp)
    perm = torch.argsort(H.diag(), descending=True)
    invperm = torch.argsort(perm)
    W_perm = W_orig[:, perm].clone()
    W_perm[:, dead[perm]] = 0
    H = H[perm][:, perm]
    Hinv = torch.cholesky_inverse(torch.linalg.cholesky(H))
    Hinv = torch.linalg.cholesky(Hinv, upper=True)
    row_std = W_orig.std(dim=1)
    s = (clip_sigmas * row_std / clip_range).clamp_min(1e-10).to(torch.float16)
    sf = s.float()
    Q = torch.zeros(rows, cols, dtype=torch.int8)
    W_work = W_perm.clone()
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        W_block = W_work[:, i1:i2].clone()
        Hinv_block = Hinv[i1:i2, i1:i2]
        Err = torch.zeros(rows, i2 - i1)
        for j in range(i2 - i1):
            w_col = W_block[:, j]
            d = Hinv_block[j, j]
            q_col = torch.clamp(torch.round(w_col / sf), -clip_range, clip_range)
            Q[:, i1 + j] = q_col.to(torch.int8)
            err = (w_col - q_col.float() * sf) / d
            Err[:, j] = err
            W_block[:, j:] -= err.unsqueeze(1) * Hinv_block[j, j:].unsqueeze(0)
        if i2 < cols:
            W_work[:, i2:] -= Err @ Hinv[i1:i2, i2:]
    return Q[:, invperm], s


@pytest.mark.parametrize("bits, sigmas", [(6, 12.85), (7, 14.0), (6, 10.0), (5, 3.0)])
def test_sdclip_gptq_reproduces_the_records_symbols_and_scales(bits, sigmas):
    g = torch.Generator().manual_seed(bits * 100 + int(sigmas))
    rows, cols = 96, 320  # three GPTQ blocks, the last one partial
    w = torch.randn(rows, cols, generator=g) * 0.02 + torch.randn(rows, 1, generator=g) * 0.005
    x = torch.randn(1024, cols, generator=g) * torch.linspace(0.2, 2.0, cols)  # distinct Hessian diagonal
    x[:, 7] = 0  # a dead input column
    h = 2 * x.T @ x / x.shape[0]
    q_ref, s_ref = record_gptq_quantize_weight(w, h, clip_sigmas=sigmas, clip_range=2 ** (bits - 1) - 1)
    q, s = gptq_quantize(w, h, GPTQParams(bits=bits, clip=f"sdclip:{sigmas}"))
    assert torch.equal(s, s_ref), "row scales differ"
    assert torch.equal(q, q_ref), f"{int((q != q_ref).sum())} of {q.numel()} symbols differ"
    print(f"int{bits} sdclip:{sigmas}: {q.numel()} symbols identical to the record's, "
          f"{int(q.abs().max())} = largest |symbol| (qmax {2 ** (bits - 1) - 1})")
