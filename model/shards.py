"""The challenge's token shard format, read and written exactly.

A shard is an ``int32[256]`` little-endian header (``[0]=20240520`` magic, ``[1]=1`` version,
``[2]=n_tokens``, the rest zero) followed by ``uint16[n_tokens]`` little-endian token ids.
Every reader error is a :class:`ShardError` naming the file and what is wrong.
"""
from __future__ import annotations

import glob
import hashlib
import os
import re
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from .console import printable
from .files import atomic_write_bytes, open_regular

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
MAX_TOKEN_ID = np.iinfo(np.uint16).max
VALIDATION_NAME = re.compile(r"fineweb_val_.*\.bin")  # the challenge's validation shards
ALLOW_VALIDATION = "GOLFPACK_ALLOW_VALIDATION_AS_TRAINING"  # set to 1: the override, for people who know what they do
MAX_SHARD_BYTES = HEADER_BYTES + 2 * (1 << 31)  # the challenge's shards hold 100 M tokens (200 MB)


class ShardError(ValueError):
    """A shard file is missing, malformed or inconsistent with the tokenizer."""


def _header_tokens(f, path: Path) -> int:
    """The token count of the shard open at ``f`` (at offset 0), its header and size checked."""
    size = os.fstat(f.fileno()).st_size
    header = np.frombuffer(f.read(HEADER_BYTES), dtype="<i4")
    if header.size != HEADER_INTS:
        raise ShardError(f"{path}: too short for a shard header ({size} bytes, need {HEADER_BYTES})")
    if int(header[0]) != SHARD_MAGIC:
        raise ShardError(f"{path}: wrong magic {int(header[0])} (expected {SHARD_MAGIC})")
    if int(header[1]) != SHARD_VERSION:
        raise ShardError(f"{path}: unsupported shard version {int(header[1])} (expected {SHARD_VERSION})")
    n = int(header[2])
    expected = HEADER_BYTES + 2 * n
    if n < 0 or size != expected:
        raise ShardError(f"{path}: header says {n} tokens ({expected} bytes) but the file has {size} bytes")
    if n == 0:  # a stream over empty shards would wait forever for a token
        raise ShardError(f"{path}: the shard holds no tokens")
    return n


def _read(path: Path, tokens: bool) -> np.ndarray | int:
    try:
        with open_regular(path, MAX_SHARD_BYTES, follow=True) as f:
            n = _header_tokens(f, path)
            return np.fromfile(f, dtype="<u2", count=n).astype(np.uint16, copy=False) if tokens else n
    except FileNotFoundError:
        raise ShardError(f"{path}: no such shard file") from None
    except (OSError, ValueError) as e:  # a folder, a FIFO, a device, larger than any shard
        raise ShardError(str(e)) from None


def read_shard(path: str | os.PathLike, vocab_size: int | None = None) -> np.ndarray:
    """Tokens of one shard as ``uint16``; validates header, size and (optionally) token range."""
    path = Path(path)
    tokens = _read(path, True)
    if vocab_size is not None and tokens.size and int(tokens.max()) >= vocab_size:
        bad = int(np.argmax(tokens >= vocab_size))
        raise ShardError(f"{path}: token id {int(tokens[bad])} at position {bad} is >= vocab size {vocab_size}")
    return tokens


def shard_tokens(path: str | os.PathLike) -> int:
    """How many tokens a shard holds, from its header (checked, as :func:`read_shard` checks it)."""
    return _read(Path(path), False)


def check_shards(files: list[Path]) -> list[Path]:
    """``files``, each a regular file with a well-formed header and at least one token: what a
    command checks before its work, reading only the headers."""
    for f in files:
        shard_tokens(f)
    return files


def stream_position(files: list[Path], state: dict[str, int]) -> tuple[int, int]:
    """A saved stream position (``TokenStream.state``), checked against the shards' headers."""
    file_idx, pos = int(state["file_idx"]), int(state["pos"])
    if not 0 <= file_idx < len(files):
        raise ShardError(f"stream position: shard {file_idx} of {len(files)}")
    n = shard_tokens(files[file_idx])
    if not 0 <= pos <= n:
        raise ShardError(f"stream position: token {pos} of a {n}-token shard")
    return file_idx, pos


def write_shard(path: str | os.PathLike, tokens: np.ndarray | Sequence[int], *, overwrite: bool = False) -> None:
    """Write one shard atomically (temp file in the same folder, then published in one step)."""
    arr = np.asarray(tokens)
    if arr.size and (arr.min() < 0 or arr.max() > MAX_TOKEN_ID):
        raise ShardError(f"{path}: token ids must fit uint16")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (SHARD_MAGIC, SHARD_VERSION, arr.size)
    atomic_write_bytes(Path(path), header.tobytes() + arr.astype("<u2").tobytes(), overwrite=overwrite)


def resolve_shards(pattern: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Sorted shard paths from a glob, a file, or a list of either; an empty match is an error.
    Wildcards go in the file name only (``data/fineweb_train_*.bin``): a glob then lists one
    folder, whatever a file or a command line says (``/*/*/*/*.bin`` would walk the disk)."""
    patterns = [pattern] if isinstance(pattern, (str, os.PathLike)) else list(pattern)
    files: list[Path] = []
    for p in patterns:
        if glob.has_magic(os.path.dirname(str(p))):
            raise ShardError(f"{printable(str(p))[:200]}: wildcards only in the file name, not its folders "
                             "(a shard glob lists one folder)")
        matched = sorted(glob.glob(str(p)))
        if not matched:
            raise ShardError(f"{p}: no shard files match")
        files.extend(Path(m) for m in matched)
    return files


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open_regular(path, MAX_SHARD_BYTES, follow=True) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def refuse_validation(files: list[Path], val: str | os.PathLike | None = None) -> list[Path]:
    """``files``, unless one is validation data: a challenge validation shard by its name
    (``fineweb_val_*.bin``), or the same file or the same bytes as a shard of ``val`` (the
    validation glob, when the caller has one). Why: training, calibration and the closed loop's
    scoring read training data only; the challenge disqualifies a submission that learned from
    validation tokens, and a mistyped glob is an easy way to do it. ``GOLFPACK_ALLOW_VALIDATION_AS_TRAINING=1``
    lifts it."""
    if os.environ.get(ALLOW_VALIDATION) == "1":
        return files
    for f in files:
        if VALIDATION_NAME.fullmatch(f.name):
            raise ShardError(f"{f}: a validation shard, given as training data (training, calibration and scoring "
                             f"read training shards only; {ALLOW_VALIDATION}=1 overrides)")
    if val is not None:
        vals = resolve_shards(val)
        sizes = {v.stat().st_size for v in vals}
        digests = None
        for f in files:
            if any(os.path.samefile(f, v) for v in vals) or f.stat().st_size in sizes and \
                    _digest(f) in (digests := digests or {_digest(v) for v in vals}):
                raise ShardError(f"{f}: the same data as a validation shard of {val}, given as training data "
                                 f"({ALLOW_VALIDATION}=1 overrides)")
    return files


def load_tokens(pattern: str | os.PathLike | Iterable[str | os.PathLike], vocab_size: int | None = None) -> torch.Tensor:
    """All tokens of the matching shards, concatenated in sorted path order."""
    arrays = [read_shard(f, vocab_size) for f in resolve_shards(pattern)]
    return torch.from_numpy(np.concatenate(arrays))


class TokenStream:
    """Reads training shards in order and wraps around forever, as the challenge's loader does
    (never validation shards: :func:`refuse_validation`, against ``val`` when given)."""

    def __init__(self, pattern: str | os.PathLike | Iterable[str | os.PathLike], vocab_size: int | None = None,
                 val: str | os.PathLike | None = None):
        self.files = refuse_validation(resolve_shards(pattern), val)
        self.vocab_size = vocab_size
        self.file_idx = 0
        self.tokens = torch.from_numpy(read_shard(self.files[0], vocab_size))
        self.pos = 0

    def state(self) -> dict[str, int]:
        return {"file_idx": self.file_idx, "pos": self.pos}

    def restore(self, state: dict[str, int]) -> None:
        file_idx, pos = stream_position(self.files, state)
        tokens = torch.from_numpy(read_shard(self.files[file_idx], self.vocab_size))
        self.file_idx, self.tokens, self.pos = file_idx, tokens, pos

    def skip(self, n: int) -> None:
        """Where ``take(n)`` would leave the stream, found from the headers of the shards it
        passes: the tail of a long stream costs one shard read, not every shard before it."""
        idx, pos = self.file_idx, self.pos + n
        while pos > (size := self.tokens.numel() if idx == self.file_idx else shard_tokens(self.files[idx])):
            idx, pos = (idx + 1) % len(self.files), pos - size
        if idx != self.file_idx:
            self.restore({"file_idx": idx, "pos": pos})
        else:
            self.pos = pos

    def take(self, n: int) -> torch.Tensor:
        chunks: list[torch.Tensor] = []
        while n > 0:
            avail = self.tokens.numel() - self.pos
            if avail <= 0:
                self.file_idx = (self.file_idx + 1) % len(self.files)
                self.tokens = torch.from_numpy(read_shard(self.files[self.file_idx], self.vocab_size))
                self.pos = 0
                continue
            k = min(n, avail)
            chunks.append(self.tokens[self.pos : self.pos + k])
            self.pos += k
            n -= k
        if not chunks:
            return self.tokens[:0]
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks)


def shard_batches(train_files: str, vocab_size: int | None, seq_len: int, batch_seqs: int = 8,
                  skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless ``(x, y)`` batches of ``batch_seqs`` windows of ``seq_len`` from training shards,
    after the first ``skip`` tokens: consecutive windows, each target the next token. The
    stream advances by exactly the input tokens, so ``skip`` counts what earlier readers took."""
    stream = TokenStream(train_files, vocab_size)
    stream.skip(skip)
    carry = stream.take(1).to(torch.int64)
    while True:
        chunk = torch.cat([carry, stream.take(batch_seqs * seq_len).to(torch.int64)])
        carry = chunk[-1:]
        yield chunk[:-1].reshape(batch_seqs, seq_len), chunk[1:].reshape(batch_seqs, seq_len)
