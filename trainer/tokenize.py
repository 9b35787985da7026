"""Documents -> challenge shards: BOS (id 1) before every document, no EOS, fixed-size shards.

Inputs are ``.jsonl`` files (one ``{"text": ...}`` object a line) or plain-text files (each
file one document). Shards are named like the challenge's, ``fineweb_{name}_{index:06d}.bin``,
and are filled to exactly ``shard_tokens`` tokens (documents may span shards) except the last.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from ..model.tokenizer import load_tokenizer
from ..model.shards import write_shard

BOS_ID = 1


class DocumentError(ValueError):
    """An input document file is missing or malformed."""


def iter_documents(paths: Iterable[str | os.PathLike]) -> Iterator[str]:
    for p in map(Path, paths):
        if not p.is_file():
            raise DocumentError(f"{p}: no such document file")
        if p.suffix == ".jsonl":
            with open(p, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        text = json.loads(line)["text"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        raise DocumentError(f"{p}:{lineno}: expected a JSON object with a 'text' field") from None
                    if not isinstance(text, str):
                        raise DocumentError(f"{p}:{lineno}: 'text' is not a string")
                    yield text
        else:
            try:
                yield p.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                raise DocumentError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def shard_path(out_dir: Path, name: str, index: int) -> Path:
    return out_dir / f"fineweb_{name}_{index:06d}.bin"


@dataclass(frozen=True)
class TokenizeReport:
    documents: int
    tokens: int
    shards: list[Path]


def tokenize_to_shards(
    documents: Iterable[str],
    tokenizer: str | os.PathLike,
    out_dir: str | os.PathLike,
    name: str = "train",
    shard_tokens: int = 100_000_000,
    force: bool = False,
    on_document: Callable[[], None] | None = None,
) -> TokenizeReport:
    if shard_tokens < 1:
        raise ValueError(f"shard size must be positive, got {shard_tokens}")
    sp = load_tokenizer(tokenizer)
    out = Path(out_dir)
    existing = sorted(out.glob(f"fineweb_{name}_*.bin")) if out.is_dir() else []
    if existing and not force:
        raise FileExistsError(f"{existing[0]}: shards named '{name}' already exist in {out} (use --force to replace them)")
    for p in existing:
        p.unlink()
    buf: list[np.ndarray] = []
    buffered = n_docs = n_tokens = 0
    shards: list[Path] = []

    def flush(n: int) -> None:
        nonlocal buf, buffered
        flat = np.concatenate(buf)
        path = shard_path(out, name, len(shards))
        write_shard(path, flat[:n], overwrite=force)
        shards.append(path)
        buf = [flat[n:]] if flat.size > n else []
        buffered = flat.size - n

    for text in documents:
        ids = np.asarray([BOS_ID] + sp.encode(text), dtype=np.uint16)
        buf.append(ids)
        buffered += ids.size
        n_docs += 1
        n_tokens += ids.size
        while buffered >= shard_tokens:
            flush(shard_tokens)
        if on_document is not None:
            on_document()
    if buffered:
        flush(buffered)
    return TokenizeReport(n_docs, n_tokens, shards)
