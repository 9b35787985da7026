"""The artifact's ``__main__.py``: ``finder.py`` and ``artifact.py`` inlined, then this
module's code (less its ``__future__`` and relative imports, which the inlined sources already
provide), then ``sys.exit(boot(...))``. Composed and minified by ``packer.bundle.bootstrap_source``.

``boot`` verifies the whole file before it unpacks a byte of code: canonical layout, seal,
manifest schema, member hashes, the building Python, and that every decoder the manifest
names is a module of the artifact's own bundle. Only then does it put the bundle's import
hook first on ``sys.meta_path`` (so the artifact runs its own code even where some golfpack is
installed) and hand over to ``golfpack.packer.runtime.commands``.
"""
from __future__ import annotations

import os
import sys

from .artifact import MAX_ARTIFACT_BYTES, ArtifactError, check_python, open_artifact, unpack_bundle
from .finder import module_file, run_bundle


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
    return run_bundle(files, "golfpack.packer.runtime.commands", argv, art, files)
