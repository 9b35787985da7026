"""What golfpack checks before ``inspect`` reads or ``run`` starts an artifact.

Everything is parsed as data, with golfpack's own code: the canonical layout, the seal, the
manifest schema and every member hash (``runtime.artifact``, the same checks the bootstrap
runs), the code bundle (bounded decompression), the codec container and its chains. The
artifact's decoder table is compared with golfpack's registry and refused on any difference:
the host process never imports or calls anything an artifact names.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ..codec.decoders.chain import DecoderSpec, check_container
from ..codec.decoders.container import Container, read_container
from ..codec.registry import Registered, decoder_table
from ..model.files import read_regular
from .runtime.finder import module_file
from .runtime.artifact import (MAX_ARTIFACT_BYTES, WEIGHTS, ArtifactError, Manifest, Unpacked,
                               open_artifact, unpack_bundle)


@dataclass
class Verified:
    path: Path
    size: int
    sha256: str  # of the whole file: compare it to know an artifact is the one you built
    art: Unpacked
    files: dict[str, str]  # the code bundle, path -> minified source
    container: Container
    table: dict[str, DecoderSpec]  # golfpack's own decoders for the artifact's stages
    data: bytes  # the very bytes that were verified: what ``run`` executes

    @property
    def manifest(self) -> Manifest:
        return self.art.manifest


def trusted_table(manifest: Manifest, files: Mapping[str, str],
                  registry: Mapping[str, Registered] | None = None) -> dict[str, DecoderSpec]:
    """golfpack's decoders for the stages the artifact lists, after checking the artifact's table
    says exactly what the registry says and that each decoder ships in its bundle."""
    ours = decoder_table(registry)
    table = {}
    for stage, entry in sorted(manifest.decoders.items()):
        if stage not in ours:
            raise ArtifactError(f"decoder table: stage '{stage}' is not installed here (refused; nothing the "
                                "artifact names is imported)")
        if ours[stage].to_json() != entry:
            raise ArtifactError(f"decoder table: stage '{stage}' names {entry} but golfpack's registry has "
                                f"{ours[stage].to_json()} (refused; nothing the artifact names is imported)")
        if module_file(entry[0], files) is None:
            raise ArtifactError(f"decoder table: stage '{stage}' decoder '{entry[0]}' is not in the artifact's bundle")
        table[stage] = ours[stage]
    return table


def read_artifact(path: str | os.PathLike) -> bytes:
    """An artifact's bytes: a regular file (no symlink, FIFO or device) of at most
    ``MAX_ARTIFACT_BYTES``, its size checked before it is read."""
    try:
        return read_regular(path, MAX_ARTIFACT_BYTES)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such artifact") from None
    except ValueError as e:
        raise ArtifactError(f"{e} (larger than any artifact)") from None


def verify_artifact(path: str | os.PathLike, registry: Mapping[str, Registered] | None = None) -> Verified:
    return verify_bytes(Path(path), read_artifact(path), registry)


def verify_bytes(path: Path, data: bytes, registry: Mapping[str, Registered] | None = None) -> Verified:
    """The same checks on bytes in memory (``golfpack build`` runs them before it writes)."""
    try:
        art = open_artifact(data)
        files = unpack_bundle(art.manifest, art.members[art.manifest.code["member"]])
        table = trusted_table(art.manifest, files, registry)
        container = read_container(art.members[WEIGHTS])
        check_container(container, table)
    except ValueError as e:  # ArtifactError, ContainerError
        raise ArtifactError(f"{path}: {e}") from None
    return Verified(path, len(data), hashlib.sha256(data).hexdigest(), art, files, container, table, data)
