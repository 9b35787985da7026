"""SentencePiece tokenizers and the challenge's byte accounting of their pieces.

For each scored target token the byte count is the UTF-8 length of its piece without a
leading '▁', plus one byte for that '▁' only when the previous token is not a boundary
(control, unknown and unused tokens are boundaries and count 0 bytes; byte-fallback pieces
count 1): the challenge's ``build_sentencepiece_luts``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .files import read_regular

MAX_TOKENIZER_BYTES = 64 << 20  # the challenge's are 255 KB (sp1024) and 371 KB (sp8192)


class TokenizerError(ValueError):
    """The tokenizer file is missing or unusable."""


@dataclass(frozen=True)
class ByteTables:
    base_bytes: torch.Tensor  # int16[V]
    has_leading_space: torch.Tensor  # bool[V]
    is_boundary: torch.Tensor  # bool[V]

    def to(self, device: torch.device | str) -> "ByteTables":
        return ByteTables(*(t.to(device) for t in (self.base_bytes, self.has_leading_space, self.is_boundary)))


def load_tokenizer(path: str | Path):
    import sentencepiece as spm

    path = Path(path)
    if path.suffix != ".model":
        raise TokenizerError(f"{path}: expected a SentencePiece .model file")
    try:
        proto = read_regular(path, MAX_TOKENIZER_BYTES, follow=True)
    except FileNotFoundError:
        raise TokenizerError(f"{path}: no such tokenizer file") from None
    if not proto:  # sentencepiece takes it as no model, then logs to stderr from C++ at each use
        raise TokenizerError(f"{path}: an empty file, not a SentencePiece model")
    try:
        return spm.SentencePieceProcessor(model_proto=proto)
    except (RuntimeError, OSError) as e:
        raise TokenizerError(f"{path}: not a SentencePiece model ({e})") from None


def byte_tables_for(tokenizer: str | Path, vocab_size: int) -> ByteTables:
    """Load a tokenizer, check it matches the model's vocabulary, and build its byte tables."""
    sp = load_tokenizer(tokenizer)
    if int(sp.vocab_size()) != vocab_size:
        raise TokenizerError(f"{tokenizer}: tokenizer vocab {int(sp.vocab_size())} does not match the model's {vocab_size}")
    return build_byte_tables(sp, vocab_size)


def build_byte_tables(sp, vocab_size: int) -> ByteTables:
    """The challenge's sentencepiece byte look-up tables (``build_sentencepiece_luts``)."""
    sp_vocab = int(sp.vocab_size())
    size = max(sp_vocab, vocab_size)
    base = np.zeros(size, dtype=np.int16)
    space = np.zeros(size, dtype=np.bool_)
    boundary = np.ones(size, dtype=np.bool_)
    for i in range(sp_vocab):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        boundary[i] = False
        if sp.is_byte(i):
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith("\u2581"):
            space[i] = True
            piece = piece[1:]
        base[i] = len(piece.encode("utf-8"))
    return ByteTables(torch.from_numpy(base), torch.from_numpy(space), torch.from_numpy(boundary))


def target_bytes(prev_ids: torch.Tensor, tgt_ids: torch.Tensor, tables: ByteTables) -> torch.Tensor:
    """Bytes of each target token given the token before it (int16, same shape)."""
    extra = tables.has_leading_space[tgt_ids] & ~tables.is_boundary[prev_ids]
    return tables.base_bytes[tgt_ids].to(torch.int16) + extra.to(torch.int16)
