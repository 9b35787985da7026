"""Publishing files: atomically, with the user's umask, and never over an existing file unless
asked. Every output golfpack writes (checkpoints, shards, calibration, artifacts) goes through
here, so a crash never leaves half a file and a concurrent writer never loses its file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = True) -> None:
    """Write ``data`` to a temporary file beside ``path``, then publish it in one step.

    ``overwrite=False`` publishes with a hard link, which fails if ``path`` exists by then (no
    check-then-write race); on a file system without hard links it creates ``path`` with
    ``O_EXCL`` instead. The file gets mode ``0o666 & ~umask``, like any file the user creates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        if overwrite:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise FileExistsError(f"{path} exists (use --force to overwrite)") from None
        except OSError:  # no hard links here: exclusive create, then write
            _write_exclusive(path, data)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _write_exclusive(path: Path, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        raise FileExistsError(f"{path} exists (use --force to overwrite)") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def refuse_existing(path: str | os.PathLike, force: bool) -> None:
    """Fail early, before long work, when ``path`` exists and ``force`` is off (the write
    itself checks again without a race)."""
    if Path(path).exists() and not force:
        raise FileExistsError(f"{path} exists (use --force to overwrite)")
