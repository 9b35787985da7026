"""The artifact's ``__main__.py``: ``artifact.py`` inlined, then this module's code (less its
``__future__`` and ``artifact`` imports, which the inlined source already provides), then
``sys.exit(boot(...))``. Composed and minified by ``packer.bundle.bootstrap_source``.

``boot`` verifies the whole file before it unpacks a byte of code: canonical layout, seal,
manifest schema, member hashes, the building Python, and that every decoder the manifest
names is a module of the artifact's own bundle. Only then does it put the bundle's import
hook first on ``sys.meta_path`` (so the artifact runs its own code even where some golfpack is
installed) and hand over to ``golfpack.packer.runtime.commands``.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

from .artifact import MAX_ARTIFACT_BYTES, ArtifactError, check_python, module_file, open_artifact, unpack_bundle

ORIGIN = "artifact:"


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


def boot(path: str, argv: list) -> int:
    try:
        if os.path.getsize(path) > MAX_ARTIFACT_BYTES:
            raise ArtifactError(f"larger than any artifact ({MAX_ARTIFACT_BYTES} bytes)")
        with open(path, "rb") as f:
            art = open_artifact(f.read())
        check_python(art.manifest)
        files = unpack_bundle(art.manifest, art.members[art.manifest.code["member"]])
        missing = [m for m, _, _ in art.manifest.decoders.values() if module_file(m, files) is None]
        if missing:
            raise ArtifactError(f"decoder module(s) {missing} are not in the artifact's own bundle")
    except (ArtifactError, OSError) as e:
        sys.exit("golfpack artifact: " + str(e))
    sys.meta_path.insert(0, BundleFinder(files))
    from golfpack.packer.runtime.commands import main

    return main(argv, art, files)
