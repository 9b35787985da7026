"""The artifact format, in one place: the canonical zip layout, the manifest schema and the
code bundle, each written and read here.

This module imports only the standard library and ``finder.py`` (the code bundle's own
format), because its source is inlined into every artifact's ``__main__.py`` after that
module's: the bootstrap runs these checks before any code of the artifact is unpacked, and golfpack runs the very same checks before ``inspect`` reads
or ``run`` starts an artifact. (So the parser ``zipimport`` uses to find ``__main__.py`` and the
one that verifies the file can never disagree: a file is accepted only if writing its members
again gives back every byte of it.)

Layout: a zip of stored members, in this order, each with a fixed header (1980-01-01, no
extra fields, no data descriptor, mode 0644)::

    __main__.py                 the bootstrap (this module, minified, plus a few lines)
    code.lzma | code.brotli     the code bundle (finder.py's format), compressed
    weights.gpak                the codec container
    manifest.json               :class:`Manifest` as canonical JSON

then one central directory and the end record, whose comment is
``golfpack-sha256:<hex SHA-256 of manifest.json>``. Nothing before, between or after.
"""
from __future__ import annotations

import hashlib
import json
import re
import struct
import sys
import zlib
from dataclasses import dataclass, fields

from .finder import MalformedBundle, decompress_bundle, split_bundle

MANIFEST, WEIGHTS, BOOTSTRAP = "manifest.json", "weights.gpak", "__main__.py"
CODE_CODECS = ("lzma", "brotli")
FORMAT, VERSION = "golfpack.artifact", 3
MAX_ARTIFACT_BYTES = 64_000_000  # refused before anything is parsed: four times the cap
MAX_ARTIFACT_MANIFEST_BYTES = 1 << 20  # manifest.json (the container inside has its own, MAX_MANIFEST_BYTES)
MAX_CODE_BYTES = 8 << 20  # the bundle, decompressed
MAX_GLOBS = 1024  # all the pipeline's rules together: inspect matches each tensor against them
COMMENT_PREFIX = b"golfpack-sha256:"
COMMENT_BYTES = len(COMMENT_PREFIX) + 64

LOCAL = struct.Struct("<IHHHHHIIIHH")  # signature .. extra length (30 bytes)
CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")  # signature .. local header offset (46 bytes)
END = struct.Struct("<IHHHHIIH")  # end of central directory (22 bytes)
LOCAL_SIG, CENTRAL_SIG, END_SIG = 0x04034B50, 0x02014B50, 0x06054B50
ZIP_VERSION, MADE_BY_UNIX, DOS_DATE_1980, MODE_0644 = 20, 3 << 8 | 20, 0x21, 0o100644 << 16


class ArtifactError(ValueError):
    """An artifact is not a well-formed, untampered golfpack artifact."""


def member_overhead(name: str) -> int:
    """Zip bytes one member costs besides its data: local header, central entry, name twice."""
    return LOCAL.size + CENTRAL.size + 2 * len(name.encode())


def zip_overhead(names: list[str]) -> int:
    return sum(member_overhead(n) for n in names) + END.size + COMMENT_BYTES


def write_zip(members: list[tuple[str, bytes]], comment: bytes) -> bytes:
    """The canonical zip of ``members`` (stored, fixed headers), deterministic to the byte."""
    out, central = bytearray(), bytearray()
    for name, data in members:
        raw = name.encode("ascii")
        crc = zlib.crc32(data)
        central += CENTRAL.pack(CENTRAL_SIG, MADE_BY_UNIX, ZIP_VERSION, 0, 0, 0, DOS_DATE_1980, crc, len(data),
                                len(data), len(raw), 0, 0, 0, 0, MODE_0644, len(out)) + raw
        out += LOCAL.pack(LOCAL_SIG, ZIP_VERSION, 0, 0, 0, DOS_DATE_1980, crc, len(data), len(data), len(raw), 0)
        out += raw + data
    end = END.pack(END_SIG, 0, 0, len(members), len(members), len(central), len(out), len(comment))
    return bytes(out + central + end + comment)


def read_zip(data: bytes, max_members: int = 4) -> tuple[list[tuple[str, bytes]], bytes]:
    """Members and comment of a canonical zip; anything else is refused. Walks the local
    headers from offset 0 (never a central directory, which is where parsers disagree), then
    requires that writing those members again reproduces ``data`` exactly."""
    if len(data) > MAX_ARTIFACT_BYTES:
        raise ArtifactError(f"{len(data)} bytes is larger than any artifact ({MAX_ARTIFACT_BYTES})")
    members, pos = [], 0
    while len(members) < max_members and pos + LOCAL.size <= len(data) and \
            struct.unpack_from("<I", data, pos)[0] == LOCAL_SIG:
        f = LOCAL.unpack_from(data, pos)
        size, name_len, extra_len = f[7], f[9], f[10]
        start = pos + LOCAL.size + name_len + extra_len
        if start + size > len(data):
            raise ArtifactError("a member runs past the end of the file")
        try:
            name = bytes(data[pos + LOCAL.size : pos + LOCAL.size + name_len]).decode("ascii")
        except UnicodeDecodeError:
            raise ArtifactError("a member name is not ASCII") from None
        members.append((name, bytes(data[start : start + size])))
        pos = start + size
    if not members:
        raise ArtifactError("not a golfpack artifact (no zip member at offset 0)")
    comment = bytes(data[-COMMENT_BYTES:])
    if not comment.startswith(COMMENT_PREFIX) or write_zip(members, comment) != data:
        raise ArtifactError("not golfpack's canonical zip layout (bytes added, removed, moved or re-encoded)")
    return members, comment


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise ArtifactError(f"manifest: {what}")


def _is_int(v: object, lo: int = 0, hi: int = 1 << 40) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _is_str(v: object, n: int = 256, pattern: str = r".+") -> bool:
    return isinstance(v, str) and len(v) <= n and re.fullmatch(pattern, v) is not None and v.isprintable()


MODULE = r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*"
KIND = r"tensor|symbols|bytes"
# A rule's role, as the manifest records it for inspect: a lower-case word. The vocabulary
# itself is the codec's (codec/decoders/config.py: ROLES), checked where a pipeline is parsed;
# this module runs before any of the bundle exists, so it does not spell it again.
ROLE = r"[a-z]+"


@dataclass
class Manifest:
    """Everything an artifact says about itself; parsed as hostile input."""

    python: list  # [major, minor] of the Python that built it: its minified code uses that syntax
    golfpack: str  # the golfpack version that built it
    code: dict  # {"member", "codec", "raw_bytes", "minified_bytes", "files"}
    weights: dict  # {"member"}
    decoders: dict  # stage name -> [decoder module, consumes, produces]
    pipeline: list  # [{"name", "match": [globs], "chain", "role": [roles] (optional)}]: the rules as data
    requirements: dict  # {"required": [distributions], "optional": [distributions]}
    train_config: object  # the trainer's resolved config, or None
    sha256: dict  # member name -> hex SHA-256
    budget: int  # the byte budget it was built for (``build --budget``): ``inspect`` measures against it
    format: str = FORMAT
    version: int = VERSION

    def to_bytes(self) -> bytes:
        return json.dumps({f.name: getattr(self, f.name) for f in fields(self)}, sort_keys=True,
                          separators=(",", ":")).encode()

    @classmethod
    def parse(cls, raw: bytes) -> "Manifest":
        _check(len(raw) <= MAX_ARTIFACT_MANIFEST_BYTES, f"larger than {MAX_ARTIFACT_MANIFEST_BYTES} bytes")
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError):
            raise ArtifactError("manifest: not JSON") from None
        _check(isinstance(doc, dict) and set(doc) == {f.name for f in fields(cls)},
               f"expected exactly the keys {sorted(f.name for f in fields(cls))}")
        m = cls(**doc)
        m.validate()
        return m

    def validate(self) -> None:
        _check(self.format == FORMAT and self.version == VERSION,
               f"format {self.format!r} version {self.version!r} (this golfpack reads {FORMAT} {VERSION})")
        _check(isinstance(self.python, list) and len(self.python) == 2 and all(_is_int(v, 0, 99) for v in self.python),
               "'python' must be [major, minor]")
        _check(_is_str(self.golfpack, 64), "'golfpack' must be a version string")
        c = self.code
        _check(isinstance(c, dict) and set(c) == {"member", "codec", "raw_bytes", "minified_bytes", "files"}
               and c["codec"] in CODE_CODECS and c["member"] == "code." + c["codec"]
               and all(_is_int(c[k], 0, MAX_CODE_BYTES) for k in ("raw_bytes", "minified_bytes", "files")),
               "'code' must be {member: code.<lzma|brotli>, codec, raw_bytes, minified_bytes, files}")
        _check(self.weights == {"member": WEIGHTS}, f"'weights' must be {{'member': '{WEIGHTS}'}}")
        _check(isinstance(self.decoders, dict) and len(self.decoders) <= 64 and all(
            _is_str(k, 64, r"[A-Za-z_]\w*") and isinstance(v, list) and len(v) == 3 and _is_str(v[0], 200, MODULE)
            and _is_str(v[1], 8, KIND) and _is_str(v[2], 8, KIND) for k, v in self.decoders.items()),
            "'decoders' must map stage names to [module, consumes, produces]")
        _check(isinstance(self.pipeline, list) and len(self.pipeline) <= 256 and all(
            isinstance(r, dict) and set(r) - {"role"} == {"name", "match", "chain"} and _is_str(r["name"])
            and _is_str(r["chain"], 4096) and isinstance(r["match"], list) and len(r["match"]) <= 256
            and all(_is_str(g) for g in r["match"]) and isinstance(r.get("role", []), list)
            and all(_is_str(x, 16, ROLE) for x in r.get("role", [])) and len(r["match"]) + len(r.get("role", [])) > 0
            for r in self.pipeline), "'pipeline' must be a list of {name, match, chain[, role]} rules")
        _check(sum(len(r["match"]) for r in self.pipeline) <= MAX_GLOBS,
               f"the pipeline has more than {MAX_GLOBS} globs (matching them to every tensor is work)")
        r = self.requirements
        _check(isinstance(r, dict) and set(r) == {"required", "optional"} and all(
            isinstance(r[k], list) and len(r[k]) <= 64 and all(_is_str(d, 64, r"[\w.-]+") for d in r[k]) for k in r),
            "'requirements' must be {required: [...], optional: [...]}")
        _check(self.train_config is None or isinstance(self.train_config, dict), "'train_config' must be an object")
        _check(_is_int(self.budget, 1, 1 << 40), "'budget' must be a positive number of bytes")
        _check(isinstance(self.sha256, dict) and all(_is_str(h, 64, r"[0-9a-f]{64}") for h in self.sha256.values()),
               "'sha256' must map member names to hex digests")

    def member_names(self) -> list[str]:
        return [BOOTSTRAP, self.code["member"], WEIGHTS]


def write_artifact(members: list[tuple[str, bytes]], manifest: Manifest) -> bytes:
    """The artifact file: ``members`` (bootstrap, code, weights, in that order), then the
    manifest with their hashes filled in, and the comment that seals the manifest."""
    manifest.sha256 = {name: hashlib.sha256(data).hexdigest() for name, data in members}
    manifest.validate()
    raw = manifest.to_bytes()
    comment = COMMENT_PREFIX + hashlib.sha256(raw).hexdigest().encode()
    return write_zip([*members, (MANIFEST, raw)], comment)


@dataclass
class Unpacked:
    """A verified artifact: its members by name and its manifest."""

    members: dict  # name -> bytes, all but manifest.json
    manifest: Manifest
    order: list  # member names in file order
    manifest_bytes: int  # size of manifest.json


def open_artifact(data: bytes) -> Unpacked:
    """Verify layout, seal, manifest schema and every member's hash; executes nothing."""
    listed, comment = read_zip(data)
    names = [n for n, _ in listed]
    if len(names) != 4 or names[0] != BOOTSTRAP or names[2:] != [WEIGHTS, MANIFEST] or \
            names[1] not in ["code." + c for c in CODE_CODECS]:
        raise ArtifactError(f"members {names} are not [{BOOTSTRAP}, code.<lzma|brotli>, {WEIGHTS}, {MANIFEST}]")
    members = dict(listed)
    raw = members.pop(MANIFEST)
    if comment != COMMENT_PREFIX + hashlib.sha256(raw).hexdigest().encode():
        raise ArtifactError("manifest.json hash mismatch (corrupted or tampered)")
    manifest = Manifest.parse(raw)
    if manifest.member_names() != names[:3] or set(manifest.sha256) != set(members):
        raise ArtifactError("manifest does not list exactly the artifact's members")
    for name, blob in members.items():
        if hashlib.sha256(blob).hexdigest() != manifest.sha256[name]:
            raise ArtifactError(f"member '{name}' hash mismatch (corrupted or tampered)")
    return Unpacked(members, manifest, names, len(raw))


def check_python(manifest: Manifest) -> None:
    """The minifier writes the syntax of the Python that built the artifact (3.12's f-strings,
    for one), so an older interpreter is refused with a clear message."""
    need = tuple(manifest.python)
    if sys.version_info[:2] < need:
        raise ArtifactError("built with Python %d.%d, whose code this Python %d.%d may not parse"
                            % (need + sys.version_info[:2]))


def unpack_bundle(manifest: Manifest, blob: bytes) -> dict:
    """Decompress (bounded by the declared size) and split the code bundle into path -> source."""
    size = manifest.code["minified_bytes"]
    try:
        raw, done = decompress_bundle(manifest.code["codec"], blob, size)
        if len(raw) != size or not done:
            raise ArtifactError(f"code bundle decompresses to {len(raw)} bytes, manifest says {size}")
        files = split_bundle(raw)
    except MalformedBundle as e:
        raise ArtifactError(str(e)) from None
    if len(files) != manifest.code["files"]:
        raise ArtifactError("code bundle is malformed")
    return files
