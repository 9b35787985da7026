"""The last lines of a records script's ``train_gpt.py``: unpack the code bundle and start it
(:func:`start`). (A script ``golfpack inline`` wrote installs its bundle with
``runtime/finder.py: install``, ``layout.py``.)

Standard library only: its source is inlined after ``runtime/finder.py`` (minified) and
followed by two lines: ``B='<the compressed bundle>'`` and ``sys.exit(start(B, codec,
__file__, argv))``. The script is Latin-1 source (its first line says so), so the bundle is a
string literal that holds every byte as one character but the five it must escape: about 2 %
larger than the binary, where base85 would add 25 %. The bundle is the user's own code, built
by ``golfpack submit``; ``golfpack check`` reads it as data with :func:`read_bundle`, the
reader the script itself runs, and never starts it.
"""
from __future__ import annotations

import json
import os
import re

from ..runtime.finder import BUNDLE_PATH, MalformedBundle, decompress_bundle, run_bundle, split_bundle

ENTRY = "golfpack.packer.records.script"
SETTINGS = "settings.json"  # the bundle member that holds the packed run's settings
ENCODING = "latin-1"  # the script's source encoding: one character per byte
MAX_BUNDLE_BYTES = 512 << 10  # the modules, decompressed (the default pipeline's: 121 KB); parsing costs < 350 MB
RECORDS_BUNDLE_PATH = BUNDLE_PATH + "|" + re.escape(SETTINGS)  # the modules and the settings


def decompressed(codec: str, compressed: bytes) -> bytes:
    """A records script's code stream, decompressed by the bundle format's own bounded reader:
    exactly one compressed stream with nothing after it (what ``lzma.decompress`` would also
    run as a second one, ``golfpack check`` would not have read), at most ``MAX_BUNDLE_BYTES``."""
    raw, whole = decompress_bundle(codec, compressed, MAX_BUNDLE_BYTES)
    if len(raw) > MAX_BUNDLE_BYTES:
        raise MalformedBundle(f"its code bundle decompresses to more than {MAX_BUNDLE_BYTES:,} bytes")
    if not whole:
        raise MalformedBundle("its code bundle is not exactly one compressed stream (data after it, or truncated)")
    return raw


def read_bundle(codec: str, compressed: bytes) -> dict:
    """``path -> source`` (and ``settings.json``) from a records script's bundle
    (:func:`decompressed`), no path twice."""
    return split_bundle(decompressed(codec, compressed), RECORDS_BUNDLE_PATH)


def start(packed: str, codec: str, script: str, argv: list) -> int:
    try:
        files = read_bundle(codec, packed.encode(ENCODING))
    except MalformedBundle as e:
        raise SystemExit(f"train_gpt.py: {e}") from None
    settings = json.loads(files.pop(SETTINGS))
    return run_bundle(files, ENTRY, settings, os.path.abspath(script), argv)
