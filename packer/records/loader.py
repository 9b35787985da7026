"""The last lines of a records script's ``train_gpt.py``: unpack the code bundle and start it.

Standard library only: its source is inlined after ``runtime/finder.py`` (minified) and
followed by one line, ``sys.exit(start(b85-encoded bundle, codec, __file__, argv))``. The
bundle is the user's own code, built by ``golfpack submit``; ``golfpack check`` reads it as
data, never through this loader.
"""
from __future__ import annotations

import base64
import json
import os

from ..runtime.finder import run_bundle

ENTRY = "golfpack.packer.records.script"
SETTINGS = "settings.json"  # the bundle member that holds the packed run's settings


def unpack(packed: bytes, codec: str) -> dict:
    """``path -> source`` from the base85 text of the compressed bundle."""
    blob = base64.b85decode(packed)
    if codec == "lzma":
        import lzma

        raw = lzma.decompress(blob, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
    else:
        import brotli

        raw = brotli.decompress(blob)
    parts = raw.split(b"\0")
    return {parts[i].decode(): parts[i + 1].decode() for i in range(0, len(parts) - 1, 2)}


def start(packed: bytes, codec: str, script: str, argv: list) -> int:
    files = unpack(packed, codec)
    settings = json.loads(files.pop(SETTINGS))
    return run_bundle(files, ENTRY, settings, os.path.abspath(script), argv)

