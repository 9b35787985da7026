"""The installed golfpack's version, as artifacts, records scripts and their checks name it."""
from __future__ import annotations

import importlib.metadata


def golfpack_version() -> str:
    try:
        return importlib.metadata.version("golfpack")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "source"
