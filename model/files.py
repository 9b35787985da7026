"""Files in and out. Publishing: atomically, with the user's umask, and never over an existing
file unless asked; every output golfpack writes (checkpoints, shards, calibration, artifacts)
goes through here, so a crash never leaves half a file and a concurrent writer never loses its
file. Reading: every input that may come from someone else (artifacts, model files,
checkpoints, records folders, data) is opened here, as a regular file only (a FIFO would hang
the reader, ``/dev/zero`` would never end) and with its size bounded before it is read."""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO

MAX_CHECKPOINT_BYTES = 8 << 30  # a torch file golfpack reads (checkpoint, calibration): ~4x its weights with resume state


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = False) -> None:
    """Write ``data`` to a temporary file beside ``path``, then publish it in one step.

    Nothing is replaced unless ``overwrite`` (a user's ``--force``): the default publishes with
    a hard link, which fails if ``path`` exists by then (no check-then-write race); on a file
    system without hard links it creates ``path`` with ``O_EXCL`` instead. The file gets mode
    ``0o666 & ~umask``, like any file the user creates.
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


class NotARegularFile(OSError):
    """An input path is a link, a FIFO, a device or a directory: golfpack reads regular files only."""


def _open_regular(path: Path, follow: bool) -> int:
    """A read-only descriptor of ``path`` if it is a regular file. ``O_NONBLOCK`` so that a FIFO
    cannot block the open itself; ``O_NOFOLLOW`` (unless ``follow``) refuses a final symlink."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (0 if follow else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except OSError as e:
        if not follow and os.path.islink(path):
            raise NotARegularFile(f"{path}: is a symbolic link (refused: golfpack reads regular files only)") from None
        raise OSError(f"{path}: cannot open ({e.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotARegularFile(f"{path}: not a regular file (refused: no FIFOs, devices or folders)")
    return fd


def open_regular(path: str | os.PathLike, limit: int, follow: bool = False) -> BinaryIO:
    """``path`` opened for reading, if it is a regular file (not a symlink unless ``follow``;
    never a FIFO, device or folder) of at most ``limit`` bytes, checked before anything is read."""
    path = Path(path)
    fd = _open_regular(path, follow)
    size = os.fstat(fd).st_size
    if size > limit:
        os.close(fd)
        raise ValueError(f"{path}: {size:,} bytes is larger than the {limit:,} bytes allowed")
    return os.fdopen(fd, "rb")


def read_regular(path: str | os.PathLike, limit: int, follow: bool = False) -> bytes:
    """The bytes of a regular file (``open_regular``); the read stops at ``limit`` whatever the
    file does meanwhile."""
    with open_regular(path, limit, follow) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path}: grew past the {limit:,} bytes allowed while being read")
    return data


def check_appendable(path: str | os.PathLike) -> None:
    """Fail early, before long work, when ``path`` exists as anything but a regular file
    (``append_line`` itself refuses it again, without a race)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        kind = "a symbolic link, never followed" if stat.S_ISLNK(mode) else "not a regular file"
        raise OSError(f"{path}: cannot append to the log (it is {kind})")


def append_line(path: str | os.PathLike, line: str) -> None:
    """``line`` and a newline appended to the log at ``path`` (created with your umask): never
    through a symbolic link, never to a FIFO or device, so a link planted in a run folder
    cannot make a run write to a file outside it."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        raise OSError(f"{path}: cannot append to the log ({e.strerror}; a symbolic link is never followed)") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path}: the log is not a regular file")
        os.write(fd, (line + "\n").encode("utf-8"))
    finally:
        os.close(fd)
