"""A records folder's formats, written and read here only.

The script: ``golfpack submit`` renders ``train_gpt.py`` with :func:`render_script`, and
``golfpack check`` accepts a script only if :func:`parse_script` renders it again byte for
byte. ``train_gpt.py`` is Latin-1 source: a header of comments, ``runtime/finder.py`` and
``records/loader.py`` inlined and minified, then exactly two lines, ``B='<the compressed
bundle>'`` (each byte one character but the five a ``'...'`` literal must escape) and the call
that starts it. Nothing else: a second assignment, a second compressed stream, an extra import
or a changed coding line does not render back, so what ``check`` reads is what Python runs.

A script ``golfpack inline`` wrote is the user's own source with golfpack packed above it
(:func:`render_inline`): the header, the user's docstring and ``__future__`` imports (which
Python wants first), ``G='<the compressed code stream>'`` (the loader, ``finder.py``
minified, then the bundle: :func:`inline_prefix`), one line that decompresses it, runs the
loader and installs the bundle on ``sys.meta_path``, a marker, then the rest of the user's
source as written.
:func:`parse_inline` finds the bundle line from the script's syntax tree (what Python runs,
not a text search a docstring could fool) and renders the script again to accept it.

The numbers: each seed's log (``train_seed<N>.log``, lines of ``lines.py``) and the summary
``submission.json`` claims, computed from the logs alone (:func:`summary`).
"""
from __future__ import annotations

import ast
import re
import statistics
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from ...model.files import read_regular
from ..bundle import INLINE_STYLE, excerpt, inlined, minify
from ..runtime import finder as finder_module
from ..version import golfpack_version
from . import loader as loader_module
from .lines import MAX_LOG_BYTES, RunNumbers, log_name, parse_log, seed_run_id

SCRIPT = "train_gpt.py"
ESCAPES = {0x00: "\\x00", 0x0A: "\\n", 0x0D: "\\r", 0x27: "\\'", 0x5C: "\\\\"}  # what a '...' literal cannot hold
UNESCAPE = {v: chr(k) for k, v in ESCAPES.items()}
HEADER = """# -*- coding: latin-1 -*-
# train_gpt.py: a golfpack {version} records script ({pipeline} pipeline). Run it inside this folder:
#   python train_gpt.py [key=value ...]  or  torchrun --standalone --nproc_per_node=8 train_gpt.py
# Environment: SEED RUN_ID ITERATIONS MAX_WALLCLOCK_SECONDS VAL_LOSS_EVERY TRAIN_LOG_EVERY DATA_PATH TOKENIZER_PATH
# (python train_gpt.py --help). Below: golfpack's model, trainer, encoders and decoders, minified and
# compressed; `golfpack check .` lists them and re-derives submission.json from the logs.
"""


HEADER_LINE = r"# train_gpt\.py: a golfpack (\S{1,64}) records script \((.{1,39}?) pipeline\)\. Run it inside this folder:"
START_CALL = "sys.exit(start(B,{codec!r},__file__,sys.argv[1:]))"
START_CALL_PATTERN = r"sys\.exit\(start\(B,'(lzma|brotli)',__file__,sys\.argv\[1:\]\)\)"


def latin1_literal(data: bytes) -> str:
    """``data`` as a single-quoted literal of Latin-1 source: each byte one character, but NUL,
    line breaks, the quote and the backslash escaped."""
    return "'" + data.decode("latin-1").translate(ESCAPES) + "'"  # C speed: check re-renders up to 16 MB


def literal_bytes(literal: str) -> bytes:
    """The inverse of :func:`latin1_literal` for its canonical output (any other spelling is
    refused by :func:`parse_script`, which renders the script again and compares)."""
    return re.sub(r"\\(?:x00|n|r|'|\\)", lambda m: UNESCAPE[m.group()], literal[1:-1]).encode("latin-1")


def pipeline_label(pipeline: str) -> str:
    """How the header names the pipeline: its name, or ``custom`` (long, or not one printable line)."""
    return pipeline if len(pipeline) < 40 and pipeline.isprintable() else "custom"


def render_script(version: str, label: str, codec: str, compressed: bytes) -> bytes:
    """``train_gpt.py``: header, the import hook and loader (minified), the bundle, the call.
    The one writer of the script's shape; :func:`parse_script` reads it by rendering again."""
    code = minify(inlined(finder_module, loader_module, tail=[]), SCRIPT)
    head = HEADER.format(version=version, pipeline=label)
    tail = f"B={latin1_literal(compressed)}\n{START_CALL.format(codec=codec)}\n"
    return (head + code + "\n" + tail).encode(loader_module.ENCODING)


@dataclass(frozen=True)
class ScriptParts:
    version: str  # the golfpack that wrote it
    pipeline: str  # the header's pipeline label
    codec: str  # the bundle's compression (CODE_CODECS)
    compressed: bytes  # the bundle literal's bytes: what the loader decompresses


def parse_script(data: bytes) -> ScriptParts:
    """What a records script runs, read as Python will: it is accepted only if rendering its
    parts again gives back every byte (this golfpack's loader, exactly one bundle literal in
    canonical escaping, the one call, nothing added anywhere), so the literal read here is the
    one the interpreter executes."""
    text = data.decode(loader_module.ENCODING)
    lines = text.split("\n")
    head = re.fullmatch(HEADER_LINE, lines[1]) if len(lines) > 4 else None
    call = re.fullmatch(START_CALL_PATTERN, lines[-2]) if len(lines) > 4 else None
    if head is None or call is None or not lines[-3].startswith("B='"):
        raise ValueError(f"{SCRIPT} is not a golfpack records script (header, bundle line or start call missing)")
    parts = ScriptParts(head.group(1), head.group(2), call.group(1), literal_bytes(lines[-3][2:]))
    if render_script(parts.version, parts.pipeline, parts.codec, parts.compressed) != data:
        raise ValueError(f"{SCRIPT} is not in the shape golfpack {golfpack_version()} writes (header says golfpack "
                         f"{parts.version}): code added, removed or re-spelled")
    return parts


INLINE_HEADER = """# -*- coding: latin-1 -*-
# train_gpt.py: your script with golfpack {version} inlined ({pipeline} pipeline) by `golfpack inline`; run it as
# you run your own. The next lines pack golfpack's API and codec, which your `import golfpack` then finds.
"""
INLINE_LINE = (r"# train_gpt\.py: your script with golfpack (\S{1,64}) inlined \((.{1,39}?) pipeline\) by "
               r"`golfpack inline`; run it as")
INLINE_BOOT = {  # the bundle literal decompressed, as the codec that compressed it does it
    "lzma": "import lzma as _c;_b=_c.LZMADecompressor(_c.FORMAT_RAW,filters=[{'id':_c.FILTER_LZMA2}]).decompress("
            "G.encode('latin-1'))",
    "brotli": "import brotli as _c;_b=_c.decompress(G.encode('latin-1'))"}
INLINE_INSTALL = ("{boot};_i=_b.index(0);_g={{'__name__':'golfpack_inline'}};exec(_b[:_i],_g);_g['install'](_b[_i+1:]);"
                  "del _c,_b,_i,_g,G")
INLINE_MARKER = "# ---- your script, as written ----"


INLINE_LOADER = ("ORIGIN", "MalformedBundle", "BUNDLE_PATH", "split_bundle", "module_file", "BundleFinder", "install")


@lru_cache(maxsize=1)
def inline_prefix() -> bytes:
    """What an inlined script's code stream holds before its bundle: the bundle format's reader
    and its import hook (:data:`INLINE_LOADER` of ``runtime/finder.py``, minified), then a NUL. The script's first line runs it
    and hands it the rest (``finder.install``); one stream, so the loader costs what it adds to
    the compressed bundle, not a stream of its own."""
    return minify(excerpt(finder_module, INLINE_LOADER), SCRIPT, INLINE_STYLE).encode() + b"\0"


def read_inline_bundle(codec: str, compressed: bytes) -> dict:
    """``path -> source`` of an inlined script's bundle, by the bounded reader
    (``loader.decompressed``); the stream must begin with this golfpack's own loader."""
    raw = loader_module.decompressed(codec, compressed)
    if not raw.startswith(inline_prefix()):
        raise finder_module.MalformedBundle("its code stream does not begin with golfpack's own loader")
    return finder_module.split_bundle(raw[len(inline_prefix()):])


@dataclass(frozen=True)
class InlineParts:
    version: str
    pipeline: str  # the header's pipeline label
    codec: str
    compressed: bytes  # the bundle
    prefix: str  # the user's lines Python wants first: docstring, ``__future__`` imports
    body: str  # the rest of the user's source, as written


def render_inline(parts: InlineParts) -> bytes:
    """An inlined ``train_gpt.py``; the one writer of its shape, :func:`parse_inline` its reader."""
    head = INLINE_HEADER.format(version=parts.version, pipeline=parts.pipeline) + parts.prefix
    lines = [f"G={latin1_literal(parts.compressed)}", INLINE_INSTALL.format(boot=INLINE_BOOT[parts.codec]),
             INLINE_MARKER, parts.body]
    return (head + "\n".join(lines)).encode(loader_module.ENCODING)


def leading_statements(body: list[ast.stmt]) -> int:
    """How many statements Python wants first: a docstring, then ``__future__`` imports."""
    first = int(bool(body) and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str))
    while first < len(body) and isinstance(body[first], ast.ImportFrom) and body[first].module == "__future__":
        first += 1
    return first


def split_user_source(text: str) -> tuple[str, str]:
    """A user's script as (the lines that must stay first: shebang, comments, docstring and
    ``__future__`` imports, each line ending in a newline; the rest)."""
    body = ast.parse(text).body
    first = leading_statements(body)
    end = body[first - 1].end_lineno if first else 0
    lines = text.split("\n")
    return "".join(f"{ln}\n" for ln in lines[:end]), "\n".join(lines[end:])


@contextmanager
def silenced() -> Iterator[None]:
    """Warnings off while untrusted source is parsed or compiled: its odd escapes and literals are
    the file's to carry, not the reader's to print (a warning quotes the source to the terminal)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def parse_inline(data: bytes) -> InlineParts:
    """What an inlined script runs: its bundle line is the first statement after the user's
    docstring and ``__future__`` imports in the script's syntax tree, and rendering the parts
    again must give back every byte (so the bundle read is the one Python unpacks)."""
    text = data.decode(loader_module.ENCODING)
    lines = text.split("\n")
    head = re.fullmatch(INLINE_LINE, lines[1]) if len(lines) > 4 else None
    if head is None:
        raise ValueError(f"{SCRIPT} is not a script golfpack inline wrote (no header)")
    try:
        with silenced():
            body = ast.parse(text).body
    except SyntaxError as e:
        raise ValueError(f"{SCRIPT} does not parse (line {e.lineno})") from None
    except (RecursionError, MemoryError, ValueError):  # nested beyond the parser, or a NUL byte
        raise ValueError(f"{SCRIPT} does not parse") from None
    first = leading_statements(body)
    g = body[first] if first < len(body) else None
    at = g.lineno - 1 if g is not None else len(lines)
    installs = {INLINE_INSTALL.format(boot=boot): codec for codec, boot in INLINE_BOOT.items()}
    call = installs.get(lines[at + 1]) if 3 <= at and at + 2 < len(lines) else None
    if not (isinstance(g, ast.Assign) and lines[at].startswith("G='") and call):
        raise ValueError(f"{SCRIPT} is not a script golfpack inline wrote (bundle or loader line missing)")
    parts = InlineParts(head.group(1), head.group(2), call, literal_bytes(lines[at][2:]),
                        "".join(f"{ln}\n" for ln in lines[3:at]), "\n".join(lines[at + 3 :]))
    if render_inline(parts) != data:
        raise ValueError(f"{SCRIPT} is not in the shape golfpack {golfpack_version()} writes inlined scripts "
                         f"(header says golfpack {parts.version}): its golfpack lines were changed")
    return parts


def numbers_of(folder: Path, seeds: list[str]) -> dict[str, RunNumbers]:
    """Each seed's numbers from its log, ``train_seed<N>.log``: a regular file, size-bounded."""
    out = {}
    for seed in seeds:
        log = log_name(seed_run_id(seed))
        try:
            text = read_regular(folder / log, MAX_LOG_BYTES).decode("utf-8", errors="replace")
        except FileNotFoundError:
            raise ValueError(f"{folder / log}: no log for seed {seed}") from None
        out[seed] = parse_log(text, log)
    return out


def summary(numbers: dict[str, RunNumbers]) -> dict:
    """The numbers ``submission.json`` claims, computed from the logs' numbers only."""
    runs = list(numbers.values())
    std = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0  # noqa: E731
    bpb, loss = [r.val_bpb for r in runs], [r.val_loss for r in runs]
    return {
        "val_bpb": round(statistics.fmean(bpb), 8), "val_loss": round(statistics.fmean(loss), 8),
        "val_bpb_std": round(std(bpb), 8), "val_loss_std": round(std(loss), 8),
        "bytes_total": max(r.artifact_bytes for r in runs), "bytes_code": max(r.code_bytes for r in runs),
        "seed_results": {seed: {"val_bpb": round(r.val_bpb, 8), "val_loss": round(r.val_loss, 8), "artifact_bytes": r.artifact_bytes,
                                "model_bytes": r.model_bytes, "code_bytes": r.code_bytes, "steps": r.steps,
                                "step_avg_ms": r.step_avg_ms, "eval_time_s": r.eval_time_s}
                         for seed, r in numbers.items()},
    }
