"""The artifact file: a zipapp (PEP 441) of stored members, written deterministically and
read back as untrusted input.

Members, in this order, all ``ZIP_STORED`` with a fixed 1980-01-01 timestamp:

* ``__main__.py``   the minified bootstrap (``bootstrap.py``);
* ``code.lzma`` or ``code.brotli``  the code bundle (``bundle.py``);
* ``weights.gpak``  the codec container (``codec/container.py``);
* ``manifest.json`` SHA-256 of every other member, code sizes, the decoder table, the
  training config.

The zip comment is ``golfpack-sha256:<hex SHA-256 of manifest.json>``, so a change to any
byte of any member, or of the manifest, is caught before code runs. (That protects against
corruption and careless edits; to know an artifact is *the* one you built, compare the SHA-256
of the whole file that ``golfpack build`` and ``golfpack run`` print.)
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"
WEIGHTS = "weights.gpak"
BOOTSTRAP = "__main__.py"
COMMENT_PREFIX = b"golfpack-sha256:"
MAX_ARTIFACT_BYTES = 1 << 30
MAX_MANIFEST_BYTES = 1 << 20
MAX_MEMBERS = 8
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


class ArtifactError(ValueError):
    """An artifact is not a well-formed, untampered golfpack zipapp."""


def write_artifact(members: list[tuple[str, bytes]], manifest: dict) -> bytes:
    """Zip ``members`` then the manifest (with their hashes added), deterministically."""
    manifest = {**manifest, "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in members}}
    raw_manifest = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in [*members, (MANIFEST, raw_manifest)]:
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            z.writestr(info, data)
        z.comment = COMMENT_PREFIX + hashlib.sha256(raw_manifest).hexdigest().encode()
    return buf.getvalue()


@dataclass
class Artifact:
    """A verified artifact's members (bytes), manifest and per-member zip overhead."""

    path: Path
    size: int
    members: dict[str, bytes]
    manifest: dict
    manifest_bytes: int
    sha256: str

    @property
    def zip_overhead(self) -> int:
        return self.size - sum(len(d) for d in self.members.values()) - self.manifest_bytes


def read_artifact(path: str | os.PathLike) -> Artifact:
    """Open and verify an artifact without executing any of it; every size is bounded."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such artifact")
    size = path.stat().st_size
    if size > MAX_ARTIFACT_BYTES:
        raise ArtifactError(f"{path}: {size} bytes is larger than any artifact ({MAX_ARTIFACT_BYTES})")
    return parse_artifact(path.read_bytes(), path)


def parse_artifact(data: bytes, path: Path) -> Artifact:
    size = len(data)
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
        infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise ArtifactError(f"{path}: not a zip archive ({e})") from None
    if not 0 < len(infos) <= MAX_MEMBERS:
        raise ArtifactError(f"{path}: {len(infos)} members (a golfpack artifact has at most {MAX_MEMBERS})")
    names = [i.filename for i in infos]
    if len(set(names)) != len(names) or MANIFEST not in names:
        raise ArtifactError(f"{path}: missing manifest.json or duplicate member names")
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
            raise ArtifactError(f"{path}: member '{info.filename}' is compressed; golfpack artifacts store members")
        if info.file_size > size or info.header_offset > size:
            raise ArtifactError(f"{path}: member '{info.filename}' declares sizes beyond the file")
    try:
        raw_manifest = z.read(MANIFEST) if z.getinfo(MANIFEST).file_size <= MAX_MANIFEST_BYTES else None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise ArtifactError(f"{path}: unreadable manifest.json ({e})") from None
    if raw_manifest is None:
        raise ArtifactError(f"{path}: manifest.json larger than {MAX_MANIFEST_BYTES} bytes")
    if z.comment != COMMENT_PREFIX + hashlib.sha256(raw_manifest).hexdigest().encode():
        raise ArtifactError(f"{path}: manifest.json hash mismatch (corrupted or tampered)")
    try:
        manifest = json.loads(raw_manifest)
    except (ValueError, RecursionError):
        raise ArtifactError(f"{path}: manifest.json is not JSON") from None
    hashes = manifest.get("sha256") if isinstance(manifest, dict) else None
    if not isinstance(hashes, dict) or set(hashes) != set(names) - {MANIFEST}:
        raise ArtifactError(f"{path}: manifest does not list exactly the artifact's members")
    members = {}
    for name, digest in hashes.items():
        try:
            blob = z.read(name)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:  # CRC errors land here
            raise ArtifactError(f"{path}: member '{name}' unreadable ({e})") from None
        if hashlib.sha256(blob).hexdigest() != digest:
            raise ArtifactError(f"{path}: member '{name}' hash mismatch (corrupted or tampered)")
        members[name] = blob
    for key in ("code", "weights", "decoders"):
        if not isinstance(manifest.get(key), dict):
            raise ArtifactError(f"{path}: manifest lacks '{key}'")
    need = manifest.get("python")
    if not (isinstance(need, list) and len(need) == 2 and all(isinstance(v, int) for v in need)):
        raise ArtifactError(f"{path}: manifest lacks the building Python version")
    return Artifact(path, size, members, manifest, len(raw_manifest), hashlib.sha256(data).hexdigest())
