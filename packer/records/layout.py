"""A records folder's formats, written and read here only.

The script: ``golfpack submit`` renders ``train_gpt.py`` with :func:`render_script`, and
``golfpack check`` accepts a script only if :func:`parse_script` renders it again byte for
byte. ``train_gpt.py`` is Latin-1 source: a header of comments, ``runtime/finder.py`` and
``records/loader.py`` inlined and minified, then exactly two lines, ``B='<the compressed
bundle>'`` (each byte one character but the five a ``'...'`` literal must escape) and the call
that starts it. Nothing else: a second assignment, a second compressed stream, an extra import
or a changed coding line does not render back, so what ``check`` reads is what Python runs.

The numbers: each seed's log (``train_seed<N>.log``, lines of ``lines.py``) and the summary
``submission.json`` claims, computed from the logs alone (:func:`summary`).
"""
from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from ...model.files import read_regular
from ..bundle import inlined, minify
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
