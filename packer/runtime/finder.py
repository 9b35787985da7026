"""The code bundle: its format, written and read here, and the import hook that runs it.

A bundle is ``path NUL source NUL ...`` (paths sorted), compressed as one raw LZMA2 or brotli
stream; reading one is bounded (a bomb stops at the caller's limit) and checks every path.

Standard library only and import-free of golfpack: its source is inlined first into every
artifact's ``__main__.py`` (then ``artifact.py``) and every records script's ``train_gpt.py``
(then ``records/loader.py``), before any of the bundle's code exists. Once first on
``sys.meta_path`` the hook makes the bundle's own code win over any golfpack installed where
the bundle runs.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import re
import sys

ORIGIN = "artifact:"


class MalformedBundle(ValueError):
    """A code bundle that does not decompress within its bound or does not split into files."""


BUNDLE_PATH = r"[A-Za-z_]\w*(/[A-Za-z_]\w*)*\.py"


def pack_bundle(files: dict) -> bytes:
    """The bundle before compression: ``path NUL source NUL ...``, paths sorted."""
    return b"\0".join(part for path in sorted(files) for part in (path.encode(), files[path].encode()))


def decompress_bundle(codec: str, blob: bytes, limit: int) -> tuple[bytes, bool]:
    """At most ``limit + 1`` bytes of a compressed bundle (``lzma``: raw LZMA2, or ``brotli``),
    and whether its stream ended exactly there: a bomb stops at the bound."""
    try:
        if codec == "lzma":
            import lzma

            d = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
            return d.decompress(blob, max_length=limit + 1), d.eof and not d.unused_data
        import brotli

        d = brotli.Decompressor()
        raw = d.process(blob, output_buffer_limit=limit + 1)
        return raw, d.is_finished()
    except Exception as e:  # each codec has its own error type
        raise MalformedBundle(f"code bundle does not decompress ({type(e).__name__})") from None


def split_bundle(raw: bytes, path_pattern: str = BUNDLE_PATH) -> dict:
    """``path NUL source NUL ...`` into path -> source; every path must match ``path_pattern``."""
    parts = raw.split(b"\0")
    try:
        files = {parts[i].decode("ascii"): parts[i + 1].decode("utf-8") for i in range(0, len(parts) - 1, 2)}
    except UnicodeDecodeError:
        raise MalformedBundle("code bundle is not text") from None
    if len(parts) % 2 or len(files) != len(parts) // 2 or not all(re.fullmatch(path_pattern, p) for p in files):
        raise MalformedBundle("code bundle is malformed")
    return files


def module_file(module: str, files: dict) -> str | None:
    """The bundle path that provides ``module`` (a package's ``__init__.py`` or a module file)."""
    base = module.replace(".", "/")
    return next((f for f in (base + "/__init__.py", base + ".py") if f in files), None)


class BundleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports modules from the bundle's sources, and nothing else."""

    def __init__(self, files: dict) -> None:
        self.files = files

    def find_spec(self, name, path=None, target=None):
        f = module_file(name, self.files)
        if f is not None:
            return importlib.util.spec_from_loader(name, self, origin=ORIGIN + f, is_package=f.endswith("/__init__.py"))
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        origin = module.__spec__.origin
        exec(compile(self.files[origin[len(ORIGIN):]], origin, "exec"), module.__dict__)


def install(raw: bytes) -> None:
    """Put a decompressed bundle first on ``sys.meta_path``: what a script ``golfpack inline``
    wrote does once its first line has decompressed the bundle (``records/layout.py``)."""
    sys.meta_path.insert(0, BundleFinder(split_bundle(raw)))


def run_bundle(files: dict, entry: str, *args):
    """Put the bundle first on ``sys.meta_path`` and call ``main(*args)`` of its module ``entry``."""
    sys.meta_path.insert(0, BundleFinder(files))
    return importlib.import_module(entry).main(*args)
