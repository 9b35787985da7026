"""The last lines of a records script's ``train_gpt.py``: unpack the code bundle and start it.

Standard library only: its source is inlined after ``runtime/finder.py`` (minified) and
followed by two lines: ``B='<the compressed bundle>'`` and ``sys.exit(start(B, codec,
__file__, argv))``. The script is Latin-1 source (its first line says so), so the bundle is a
string literal that holds every byte as one character but the five it must escape: about 2 %
larger than the binary, where base85 would add 25 %. The bundle is the user's own code, built
by ``golfpack submit``; ``golfpack check`` reads it as data, never through this loader.
"""
from __future__ import annotations

import json
import os

from ..runtime.finder import run_bundle

ENTRY = "golfpack.packer.records.script"
SETTINGS = "settings.json"  # the bundle member that holds the packed run's settings
ENCODING = "latin-1"  # the script's source encoding: one character per byte


def unpack(packed: str, codec: str) -> dict:
    """``path -> source`` from the compressed bundle, one character per byte: exactly one
    compressed stream with nothing after it (``lzma.decompress`` would also run a second one,
    which ``golfpack check`` would not have read), and no path twice."""
    blob = packed.encode(ENCODING)
    if codec == "lzma":
        import lzma

        d = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
        raw, whole = d.decompress(blob), d.eof and not d.unused_data
    else:
        import brotli

        d = brotli.Decompressor()
        raw = d.process(blob)
        whole = d.is_finished()
    parts = raw.split(b"\0")
    files = {parts[i].decode(): parts[i + 1].decode() for i in range(0, len(parts) - 1, 2)}
    if not whole or len(parts) % 2 or 2 * len(files) != len(parts):
        raise SystemExit("train_gpt.py: its code bundle is malformed")
    return files


def start(packed: str, codec: str, script: str, argv: list) -> int:
    files = unpack(packed, codec)
    settings = json.loads(files.pop(SETTINGS))
    return run_bundle(files, ENTRY, settings, os.path.abspath(script), argv)

