"""Crafted hostile artifacts for tests/test_hostile.py: each one an attack a reviewer found or
could build, made from a genuine artifact's bytes."""
from __future__ import annotations

import hashlib
import struct
import subprocess
import zlib

from golfpack.codec.decoders.container import HEADER, read_container
from golfpack.packer.runtime.artifact import (CENTRAL, CENTRAL_SIG, DOS_DATE_1980, END, END_SIG, LOCAL, LOCAL_SIG,
                                              MADE_BY_UNIX, MANIFEST, MODE_0644, WEIGHTS, ZIP_VERSION, Manifest,
                                              read_zip, write_artifact)

from .forkserver import run_cli


def golfpack_measured(*args: str, env: dict | None = None, cwd=None,
                      timeout: int = 300) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run the golfpack CLI as a user does (``forkserver.run_cli``); the result, its peak RSS in
    MB (``VmHWM``: the process's own; ``ru_maxrss`` would count the forking parent's pages) and
    the CPU seconds (user + system) the command used after torch and the CLI were imported:
    what an attack costs. The imports every run pays are left out, because machines (and one
    machine under load) differ in them by more than the work a bound allows. A forked child's
    peak starts from the pages it inherits (about 160 MB; a fresh process peaks near 230 MB
    while importing), so an attack that allocates more than ~70 MB shows the same peak either
    way, and MAX_PEAK_MB is 512."""
    proc = run_cli(list(args), env=env, cwd=cwd, timeout=timeout, measure=True)
    peak = [ln.split() for ln in proc.stderr.splitlines() if ln.startswith("PEAK_KB")]
    proc.stderr = "\n".join(ln for ln in proc.stderr.splitlines() if not ln.startswith("PEAK_KB"))
    return proc, (int(peak[-1][1]) / 1024 if peak else float("nan")), (float(peak[-1][2]) if peak else float("nan"))


ZIP64_END = struct.Struct("<IQHHIIQQQQ")  # 56 bytes
ZIP64_LOCATOR = struct.Struct("<IIQI")  # 20 bytes


def local(name: str, data: bytes) -> bytes:
    raw = name.encode()
    return LOCAL.pack(LOCAL_SIG, ZIP_VERSION, 0, 0, 0, DOS_DATE_1980, zlib.crc32(data), len(data), len(data),
                      len(raw), 0) + raw + data


def central(name: str, data: bytes, offset: int) -> bytes:
    raw = name.encode()
    return CENTRAL.pack(CENTRAL_SIG, MADE_BY_UNIX, ZIP_VERSION, 0, 0, 0, DOS_DATE_1980, zlib.crc32(data), len(data),
                        len(data), len(raw), 0, 0, 0, 0, MODE_0644, offset) + raw


def layout(genuine: bytes) -> tuple[list[tuple[str, bytes, int]], bytes, int]:
    """Members with their local-header offsets, the comment, and where the central directory starts."""
    members, comment = read_zip(genuine)
    out, pos = [], 0
    for name, data in members:
        out.append((name, data, pos))
        pos += LOCAL.size + len(name) + len(data)
    return out, comment, pos


def zip64_differential(genuine: bytes, evil_main: bytes) -> bytes:
    """Every genuine member, manifest and comment untouched, plus a hidden central directory that
    swaps in ``evil_main`` as ``__main__.py``. zipfile follows the ZIP64 end record to the genuine
    directory; zipimport (what ``python file.pyz`` runs) reads the hidden one, which ends at four
    junk bytes before the genuine directory."""
    members, comment, cd_start = layout(genuine)
    body = genuine[:cd_start]
    evil_at = len(body)
    body += local("__main__.py", evil_main)
    hidden_at = len(body)
    hidden = central("__main__.py", evil_main, evil_at) + b"".join(
        central(n, d, off) for n, d, off in members if n != "__main__.py")
    body += hidden + b"JUNK"
    genuine_cd_at = len(body)
    genuine_cd = b"".join(central(n, d, off) for n, d, off in members)
    body += genuine_cd
    zip64_at = len(body)
    body += ZIP64_END.pack(0x06064B50, 44, MADE_BY_UNIX, 45, 0, 0, len(members), len(members), len(genuine_cd),
                           genuine_cd_at)
    body += ZIP64_LOCATOR.pack(0x07064B50, 0, zip64_at, 1)
    end_at = len(body)
    body += END.pack(END_SIG, 0, 0, len(members), len(members), end_at - hidden_at, hidden_at, len(comment)) + comment
    return body


def overlapping(genuine: bytes, copies: int) -> bytes:
    """A central directory listing the weights member ``copies`` times under new names, all at
    the same offset: a small file that a naive reader inflates into ``copies`` full copies."""
    members, comment, cd_start = layout(genuine)
    w = next(m for m in members if m[0] == WEIGHTS)
    cd = b"".join(central(n, d, off) for n, d, off in members) + b"".join(
        central(f"w{i}.gpak", w[1], w[2]) for i in range(copies))
    n = len(members) + copies
    return genuine[:cd_start] + cd + END.pack(END_SIG, 0, 0, n & 0xFFFF, n & 0xFFFF, len(cd), cd_start,
                                              len(comment)) + comment


def directory_flood(genuine: bytes, entries: int) -> bytes:
    """The genuine file with ``entries`` bogus central-directory entries before its own."""
    members, comment, cd_start = layout(genuine)
    flood = central("x" * 40, b"", 0) * entries
    cd = flood + b"".join(central(n, d, off) for n, d, off in members)
    return genuine[:cd_start] + cd + END.pack(END_SIG, 0, 0, 0xFFFF, 0xFFFF, len(cd), cd_start, len(comment)) + comment


def resealed(genuine: bytes, edit) -> bytes:
    """The artifact rebuilt with ``edit(manifest, members)`` applied and every hash recomputed:
    what an attacker who controls the whole file can make (integrity without a signature)."""
    members, _ = read_zip(genuine)
    by_name = dict(members)
    manifest = Manifest.parse(by_name.pop(MANIFEST))
    edit(manifest, by_name)
    return write_artifact([(n, by_name[n]) for n, _ in members if n != MANIFEST], manifest)


def amplifying_container(numel: int, tensors: int) -> bytes:
    """A valid, sealed container whose tensors are constant (one-symbol ANS: no data at all),
    declaring ``tensors`` x ``numel`` elements in well under a kilobyte."""
    import json

    import brotli

    from golfpack.codec.decoders.counts import write_varints
    import numpy as np

    table = write_varints(np.array([numel]))
    streams = b""
    entries = []
    for i in range(tensors):
        entries.append({"name": f"t{i}", "dtype": "float32", "shape": [numel], "data": [len(streams), 0],
                        "chain": [{"stage": "rtn", "params": {"bits": 6}, "blobs": {"scales": [len(streams), 2]}},
                                  {"stage": "ans", "params": {"lo": 0, "n": 1},
                                   "blobs": {"table": [len(streams) + 2, len(table)]}}]})
        streams += b"\x00\x3c" + table
    packed = brotli.compress(json.dumps({"tensors": entries, "meta": {}}).encode())
    body = HEADER.pack(b"GPAK", 1, b"\0\0\0", len(packed), len(streams)) + packed + streams
    return body + hashlib.sha256(body).digest()


def with_weights(genuine: bytes, container: bytes) -> bytes:
    def edit(manifest: Manifest, members: dict) -> None:
        members[WEIGHTS] = container

    return resealed(genuine, edit)


def with_meta(genuine: bytes, edit) -> bytes:
    """The artifact resealed with its container's meta changed by ``edit(meta)`` (container
    digest recomputed too): the model builder an attacker would like an artifact to import."""
    import json

    import brotli

    members, _ = read_zip(genuine)
    container = dict(members)[WEIGHTS]
    magic, version, reserved, m, n = HEADER.unpack_from(container)
    manifest = json.loads(brotli.decompress(container[HEADER.size:HEADER.size + m]))
    edit(manifest["meta"])
    packed = brotli.compress(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode())
    streams = container[HEADER.size + m:HEADER.size + m + n]
    body = HEADER.pack(magic, version, reserved, len(packed), n) + packed + streams
    return with_weights(genuine, body + hashlib.sha256(body).digest())


__all__ = ["golfpack_measured", "zip64_differential", "overlapping", "directory_flood", "resealed", "amplifying_container", "with_weights",
           "with_meta", "read_container"]


MAX_WORK_CPU_SECONDS = 1.0  # after the imports every run pays (golfpack_measured)
MAX_PEAK_MB = 512


def refused(measured, *needles: str, stream: str = "stderr", max_cpu: float = MAX_WORK_CPU_SECONDS) -> str:
    """The craft was refused: exit status 1, no traceback, within the CPU and memory bounds,
    and the one error line (``stream``: stderr, or check's report on stdout) says why.
    ``max_cpu``: a craft whose cost is torch's own unpickler may take up to issue 36's 2 s."""
    proc, peak, cpu = measured
    text = getattr(proc, stream)
    print(f"rc {proc.returncode}, peak {peak:.0f} MB, cpu {cpu:.2f} s: {text.strip().splitlines()[-3:]}")
    assert proc.returncode == 1, (proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert peak <= MAX_PEAK_MB and cpu <= max_cpu, (peak, cpu)
    if stream == "stderr":
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("golfpack: error:"), proc.stderr
    assert any(n in text for n in needles), text
    return text
