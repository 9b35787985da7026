"""The last lines of a records script's ``train_gpt.py``: unpack the code bundle and start it
(:func:`start`), or, in a script ``golfpack inline`` wrote, install it for the user's own code
(:func:`install`).

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
import sys

from ..runtime.finder import BUNDLE_PATH, BundleFinder, MalformedBundle, decompress_bundle, run_bundle, split_bundle

ENTRY = "golfpack.packer.records.script"
SETTINGS = "settings.json"  # the bundle member that holds the packed run's settings
ENCODING = "latin-1"  # the script's source encoding: one character per byte
MAX_BUNDLE_BYTES = 512 << 10  # the modules, decompressed (the default pipeline's: 121 KB); parsing costs < 350 MB
RECORDS_BUNDLE_PATH = BUNDLE_PATH + "|" + re.escape(SETTINGS)  # the modules and the settings


def read_bundle(codec: str, compressed: bytes) -> dict:
    """``path -> source`` (and ``settings.json``) from a records script's bundle, by the bundle
    format's own bounded reader: exactly one compressed stream with nothing after it (what
    ``lzma.decompress`` would also run as a second one, ``golfpack check`` would not have read),
    at most ``MAX_BUNDLE_BYTES`` decompressed, no path twice."""
    raw, whole = decompress_bundle(codec, compressed, MAX_BUNDLE_BYTES)
    if len(raw) > MAX_BUNDLE_BYTES:
        raise MalformedBundle(f"its code bundle decompresses to more than {MAX_BUNDLE_BYTES:,} bytes")
    if not whole:
        raise MalformedBundle("its code bundle is not exactly one compressed stream (data after it, or truncated)")
    return split_bundle(raw, RECORDS_BUNDLE_PATH)


def start(packed: str, codec: str, script: str, argv: list) -> int:
    try:
        files = read_bundle(codec, packed.encode(ENCODING))
    except MalformedBundle as e:
        raise SystemExit(f"train_gpt.py: {e}") from None
    settings = json.loads(files.pop(SETTINGS))
    return run_bundle(files, ENTRY, settings, os.path.abspath(script), argv)



def install(packed: str, codec: str) -> None:
    """The first act of a script ``golfpack inline`` wrote: its bundle first on
    ``sys.meta_path``, so the user's ``import golfpack`` finds the golfpack packed with it,
    whether or not one is installed where it runs."""
    try:
        files = read_bundle(codec, packed.encode(ENCODING))
    except MalformedBundle as e:
        raise SystemExit(f"train_gpt.py: {e}") from None
    sys.meta_path.insert(0, BundleFinder(files))
