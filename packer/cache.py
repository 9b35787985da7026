"""A content-addressed disk cache for the build's pure, slow steps (python-minifier takes about
0.03 s a module: a tiny model's ``build`` took 4.9 s without the cache, 3.7 s with it).

An entry's name is the SHA-256 of everything its value depends on, so a hit is the value a fresh
computation would give and the cache never changes what is built. Where the cache lives:
``GOLFPACK_CACHE_DIR``, else ``$XDG_CACHE_HOME/golfpack``, else ``~/.cache/golfpack``;
``GOLFPACK_CACHE_DIR=`` (empty) turns it off. It is trusted as the installed packages are (only
the user writes it); still, an entry that is not a small regular file is recomputed, never
followed, and any failure to read or write it only costs the recomputation.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Iterable

from ..model.files import atomic_write_bytes, read_regular

ENV = "GOLFPACK_CACHE_DIR"
MAX_ENTRY_BYTES = 4 << 20


def cache_dir() -> Path | None:
    """The cache's folder, or None when ``GOLFPACK_CACHE_DIR`` is set empty."""
    if ENV in os.environ:
        return Path(os.environ[ENV]) if os.environ[ENV] else None
    try:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    except RuntimeError:  # no home folder: no cache
        return None
    return Path(base) / "golfpack"


def cache_key(parts: Iterable[str | bytes]) -> str:
    """SHA-256 of ``parts``, each length-prefixed so that no two lists share a key."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little") + data)
    return h.hexdigest()


def cached(kind: str, parts: Iterable[str | bytes], compute: Callable[[], str]) -> str:
    """``compute()``, or the value an earlier call with the same ``kind`` and ``parts`` stored."""
    root = cache_dir()
    if root is None:
        return compute()
    path = root / kind / cache_key(parts)
    try:
        return read_regular(path, MAX_ENTRY_BYTES).decode("utf-8")
    except (OSError, ValueError):  # absent, not a regular file, too large, not UTF-8
        pass
    value = compute()
    data = value.encode("utf-8")
    if len(data) <= MAX_ENTRY_BYTES:
        try:
            atomic_write_bytes(path, data, overwrite=True)
        except OSError:  # a read-only or full disk costs only the recomputation
            pass
    return value
