"""Exact val_bpb: the challenge's byte accounting on real data and an independent reference."""
import json
import math

import numpy as np
import pytest
import sentencepiece as spm
import torch

from golfpack.model.scoring import EvalSettings, evaluate, truncate_for_eval, windows
from golfpack.model.tokenizer import build_byte_tables, load_tokenizer, target_bytes
from golfpack.model.shards import read_shard

from .conftest import SP1024, VAL_DOCS, VAL_SHARD, make_tiny


def test_byte_counts_on_real_validation_prefix(data_dir):
    tables = build_byte_tables(load_tokenizer(SP1024), 1024)
    tokens = torch.from_numpy(read_shard(VAL_SHARD, 1024).astype(np.int64))
    nbytes = target_bytes(tokens[:-1], tokens[1:], tables).long()
    # Targets 1..1,040,059 are exactly the 901 complete documents.
    assert int(nbytes[:1_040_059].sum()) == 2_504_310
    assert int(nbytes.sum()) == 2_504_867
    with open(VAL_DOCS, encoding="utf-8") as f:
        utf8 = sum(len(json.loads(line)["text"].encode("utf-8")) for line in f)
    assert utf8 == 2_504_310


def plain_bpb(model, tokens: np.ndarray, sp_path, seq_len: int, stride: int) -> tuple[float, float]:
    """An independent reference: every target scored by the window that first sees it, in
    float64 numpy, bytes counted straight from the sentencepiece API."""
    sp = spm.SentencePieceProcessor(model_file=str(sp_path))

    def nbytes(prev: int, tgt: int) -> int:
        if sp.is_control(tgt) or sp.is_unknown(tgt) or sp.is_unused(tgt):
            return 0
        if sp.is_byte(tgt):
            return 1
        piece = sp.id_to_piece(tgt)
        prev_boundary = sp.is_control(prev) or sp.is_unknown(prev) or sp.is_unused(prev)
        lead = piece.startswith("\u2581")
        return len(piece[1:].encode() if lead else piece.encode()) + int(lead and not prev_boundary)

    n = len(tokens) - 1
    loss, count, total_bytes, done = 0.0, 0, 0, 0
    start = 0
    while done < n:
        start = min(start, n - seq_len)
        with torch.no_grad():
            logits = model.logits(torch.from_numpy(tokens[start : start + seq_len][None].astype(np.int64)))[0]
        lg = logits.numpy().astype(np.float64)
        logp = lg - (np.log(np.exp(lg - lg.max(1, keepdims=True)).sum(1)) + lg.max(1))[:, None]
        for t in range(done, start + seq_len):
            i = t - start
            loss -= logp[i, tokens[t + 1]]
            total_bytes += nbytes(int(tokens[t]), int(tokens[t + 1]))
            count += 1
        done = start + seq_len
        start += stride
    mean = loss / count
    return mean, mean / math.log(2) * count / total_bytes


@pytest.mark.parametrize("stride", [None, 48, 64])
def test_evaluator_matches_plain_reference(data_dir, stride):
    seq_len = 64
    model = make_tiny(5)
    tokens = truncate_for_eval(torch.from_numpy(read_shard(VAL_SHARD)[:3000].astype(np.int64)), seq_len)
    tables = build_byte_tables(load_tokenizer(SP1024), 1024)
    got = evaluate(model, tokens, tables, EvalSettings(seq_len, stride, 7))
    ref_loss, ref_bpb = plain_bpb(model, tokens.numpy(), SP1024, seq_len, stride or seq_len)
    print(f"stride={stride}: golfpack val_bpb={got.val_bpb:.12f} reference={ref_bpb:.12f}")
    assert got.tokens == tokens.numel() - 1
    assert abs(got.val_loss - ref_loss) <= 1e-9 * ref_loss
    assert abs(got.val_bpb - ref_bpb) <= 1e-9 * ref_bpb


def test_sliding_with_stride_seq_len_equals_contiguous(data_dir):
    model = make_tiny(6)
    tokens = truncate_for_eval(torch.from_numpy(read_shard(VAL_SHARD)[:5000].astype(np.int64)), 128)
    tables = build_byte_tables(load_tokenizer(SP1024), 1024)
    a = evaluate(model, tokens, tables, EvalSettings(128, None, 8))
    b = evaluate(model, tokens, tables, EvalSettings(128, 128, 3))
    assert a.tokens == b.tokens and a.bytes == b.bytes
    assert abs(a.val_bpb - b.val_bpb) <= 1e-12 * a.val_bpb


@pytest.mark.parametrize("n, seq_len, stride", [(1024, 64, 64), (1000, 64, 17), (640, 128, 1), (129, 128, 100)])
def test_windows_score_every_target_once(n, seq_len, stride):
    seen = np.zeros(n, dtype=int)
    for start, first in windows(n, seq_len, stride):
        seen[start + first : start + seq_len] += 1
        assert first <= seq_len - 1 or start == 0
    assert (seen == 1).all()


def test_windows_reject_bad_stride():
    with pytest.raises(ValueError, match="stride"):
        windows(100, 10, 11)


def test_rank_slices_add_up_to_the_whole(data_dir):
    """Multi-process evaluation splits windows by rank; the partial sums make the total."""
    model = make_tiny(9)
    tokens = truncate_for_eval(torch.from_numpy(read_shard(VAL_SHARD)[:6000].astype(np.int64)), 128)
    tables = build_byte_tables(load_tokenizer(SP1024), 1024)
    whole = evaluate(model, tokens, tables, EvalSettings(128, 64))
    parts = [evaluate(model, tokens, tables, EvalSettings(128, 64), rank=r, world_size=3) for r in range(3)]
    assert sum(p.tokens for p in parts) == whole.tokens and sum(p.bytes for p in parts) == whole.bytes
    loss_sum = sum(p.val_loss * p.tokens for p in parts)
    assert abs(loss_sum / whole.tokens - whole.val_loss) <= 1e-12 * whole.val_loss
