"""``golfpack check RECORDS_DIR``: re-derive every number of a records folder from its files.

Sizes come from the files on disk (``train_gpt.py``, each seed's model file), scores and
steps from the logs (``lines.parse_log``); ``submission.json`` must agree with them, and
every seed (the largest, not the mean) must fit the cap. The code must compile on the target
Python, and no code may hide outside the counted bytes: a ``train_gpt.py`` (or a module packed
in it) that imports a local file, or a native source in the folder, is refused.

The folder is read as data: nothing in it is imported or run. A golfpack script's bundle is
found as the bytes literal of its last line, decoded and decompressed with bounds.
"""
from __future__ import annotations

import ast
import hashlib
import json
import math
import re
import sys
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

from ..runtime.artifact import (BUNDLE_PATH, CHALLENGE_CAP, CODE_CODECS, MAX_CODE_BYTES, decompress_bundle,
                                split_bundle)
from .lines import LogError, RunNumbers
from .loader import ENCODING, SETTINGS
from .submit import SCRIPT, numbers_of, summary

NATIVE_SUFFIXES = {".c", ".cc", ".cpp", ".cxx", ".cu", ".h", ".hpp", ".so", ".pyx", ".pyd", ".dll", ".dylib"}
SEED_LOG = re.compile(r"^train_seed(-?[0-9]+)\.log$")
MAX_JSON_BYTES = 1 << 20
MAX_SCRIPT_BYTES = CHALLENGE_CAP
RECORDS_BUNDLE_PATH = f"{BUNDLE_PATH}|{re.escape(SETTINGS)}"  # the modules, and the packed run's settings
FLOAT_TOL = 5.5e-9  # submission.json rounds to 8 decimals (the challenge's)


@dataclass
class Report:
    folder: Path
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def bundle_of(source: str) -> dict[str, str]:
    """The modules packed in a golfpack records script, or {} for another script: its last two
    lines, ``B='<bundle, one character per byte>'`` and ``sys.exit(start(B,'<codec>',...))``,
    decoded without running anything."""
    try:
        # "\n" only: str.splitlines would also split at \x85, \x1c, ..., which the literal holds
        assign, call = (ast.parse(line).body[0] for line in source.rstrip("\n").split("\n")[-2:])
    except (SyntaxError, IndexError, ValueError):
        return {}
    starts = [n for n in ast.walk(call) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "start"]
    if not (isinstance(assign, ast.Assign) and isinstance(assign.value, ast.Constant) and starts
            and len(starts[0].args) >= 2 and isinstance(starts[0].args[1], ast.Constant)):
        return {}
    packed, codec = assign.value.value, starts[0].args[1].value
    if not isinstance(packed, str) or codec not in CODE_CODECS:
        return {}
    raw, _ = decompress_bundle(codec, packed.encode(ENCODING), MAX_CODE_BYTES)
    if len(raw) > MAX_CODE_BYTES:
        raise ValueError(f"{SCRIPT}: its code bundle decompresses to more than {MAX_CODE_BYTES:,} bytes")
    return split_bundle(raw, RECORDS_BUNDLE_PATH)


def module_names(files: dict[str, str]) -> set[str]:
    return {p[: -len("/__init__.py")].replace("/", ".") if p.endswith("/__init__.py") else p[:-3].replace("/", ".")
            for p in files if p.endswith(".py")}


def imported_tops(path: str, source: str, packaged: set[str]) -> set[str]:
    """Top-level names of the absolute imports in ``source``."""
    tops = set()
    for node in ast.walk(ast.parse(source, path)):
        if isinstance(node, ast.Import):
            tops |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            tops.add(node.module.split(".")[0])
    return tops - packaged


def check_code(report: Report, folder: Path, target: tuple[int, int]) -> None:
    script = folder / SCRIPT
    if not script.is_file():
        report.problems.append(f"no {SCRIPT}")
        return
    if script.stat().st_size > MAX_SCRIPT_BYTES:
        report.problems.append(f"{SCRIPT} alone is over the cap")
        return
    with tokenize.open(script) as f:  # the encoding its coding line declares (a records script: Latin-1)
        source = f.read()
    files = {SCRIPT: source}
    try:
        files |= {p: s for p, s in bundle_of(source).items() if p != SETTINGS}
    except ValueError as e:
        report.problems.append(f"{SCRIPT}: its code bundle does not decode: {e}")
    packaged = {m.split(".")[0] for m in module_names(files)} | {"__future__"}
    local = {p.stem for p in folder.iterdir() if p.suffix == ".py" and p.name != SCRIPT} | \
            {p.name for p in folder.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    for path, src in files.items():
        try:
            compile(src, path, "exec")
            ast.parse(src, path, feature_version=target)
        except SyntaxError as e:
            report.problems.append(f"{path}: does not compile on Python {target[0]}.{target[1]} ({e.msg}, line {e.lineno})")
            continue
        for top in sorted(imported_tops(path, src, packaged) & local):
            report.problems.append(f"{path} imports '{top}', a local file whose bytes are not counted "
                                   f"(fold it into {SCRIPT})")
    for p in sorted(folder.rglob("*")):
        if p.suffix in NATIVE_SUFFIXES or (p.suffix == ".py" and p.name != SCRIPT and p.parent == folder):
            report.problems.append(f"{p.relative_to(folder)}: code outside {SCRIPT}, not counted in the artifact bytes")
    report.notes.append(f"{SCRIPT}: {script.stat().st_size:,} bytes, {len(files) - 1} packed modules, compiles on "
                        f"Python {target[0]}.{target[1]}")


def close(a: float, b: object) -> bool:
    return isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) and abs(a - b) <= FLOAT_TOL


def check_seed(report: Report, folder: Path, seed: str, r: RunNumbers, claimed: object) -> None:
    code = (folder / SCRIPT).stat().st_size if (folder / SCRIPT).is_file() else -1
    if r.code_bytes != code:
        report.problems.append(f"seed {seed}: log says code {r.code_bytes:,} bytes, {SCRIPT} is {code:,}")
    model = folder / r.model_file
    if Path(r.model_file).name != r.model_file or not model.is_file():
        report.problems.append(f"seed {seed}: model file '{r.model_file}' named by the log is not in the folder")
    else:
        size = model.stat().st_size
        if size != r.model_bytes or hashlib.sha256(model.read_bytes()).hexdigest() != r.model_sha256:
            report.problems.append(f"seed {seed}: {r.model_file} is {size:,} bytes / not the file the log hashed")
    total = code + (model.stat().st_size if model.is_file() else r.model_bytes)
    if r.artifact_bytes != r.code_bytes + r.model_bytes:
        report.problems.append(f"seed {seed}: log's total {r.artifact_bytes:,} is not code + model")
    if max(total, r.artifact_bytes) > CHALLENGE_CAP:
        report.problems.append(f"seed {seed}: {max(total, r.artifact_bytes):,} bytes, "
                               f"{max(total, r.artifact_bytes) - CHALLENGE_CAP:,} over the cap of {CHALLENGE_CAP:,}")
    if not isinstance(claimed, dict):
        report.problems.append(f"seed {seed}: no entry in submission.json's seed_results")
        return
    ints = {"artifact_bytes": r.artifact_bytes, "model_bytes": r.model_bytes, "code_bytes": r.code_bytes,
            "steps": r.steps}
    floats = {"val_bpb": r.val_bpb, "val_loss": r.val_loss, "step_avg_ms": r.step_avg_ms, "eval_time_s": r.eval_time_s}
    for key, value in ints.items():
        if claimed.get(key) != value or isinstance(claimed.get(key), bool):
            report.problems.append(f"seed {seed}: submission.json says {key} {claimed.get(key)!r}, the log {value!r}")
    for key, value in floats.items():
        if not close(value, claimed.get(key)):
            report.problems.append(f"seed {seed}: submission.json says {key} {claimed.get(key)!r}, the log {value!r}")
    report.notes.append(f"seed {seed}: val_bpb {r.val_bpb:.8f}, {r.artifact_bytes:,} bytes "
                        f"({CHALLENGE_CAP - r.artifact_bytes:,} under the cap), {r.steps} steps")


def check_folder(folder: str | Path, target: tuple[int, int] | None = None) -> Report:
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such records folder")
    report = Report(folder)
    sub = folder / "submission.json"
    try:
        if sub.stat().st_size > MAX_JSON_BYTES:
            raise ValueError("too large")
        doc = json.loads(sub.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or not isinstance(doc.get("seed_results"), dict) or not doc["seed_results"]:
            raise ValueError("no seed_results table")
    except (OSError, ValueError, RecursionError) as e:
        report.problems.append(f"submission.json: unreadable ({e})")
        doc = {"seed_results": {}}
    python = doc.get("golfpack", {}).get("python") if isinstance(doc.get("golfpack"), dict) else None
    target = target or (tuple(python) if isinstance(python, list) and len(python) == 2 else sys.version_info[:2])
    check_code(report, folder, target)
    seeds = [str(s) for s in doc["seed_results"]]
    if not seeds:
        return report
    logs = {m.group(1) for p in folder.iterdir() if (m := SEED_LOG.match(p.name))}
    for extra in sorted(logs - set(seeds)):
        report.problems.append(f"train_seed{extra}.log: a seed's log that submission.json leaves out")
    try:
        numbers = numbers_of(folder, seeds)
    except (ValueError, LogError) as e:
        report.problems.append(str(e))
        return report
    for seed, r in numbers.items():
        check_seed(report, folder, seed, r, doc["seed_results"].get(seed))
    derived = summary(numbers)
    for key in ("val_bpb", "val_loss", "val_bpb_std", "val_loss_std"):
        if not close(derived[key], doc.get(key)):
            report.problems.append(f"submission.json says {key} {doc.get(key)!r}, the logs give {derived[key]!r}")
    for key in ("bytes_total", "bytes_code"):
        if doc.get(key) != derived[key]:
            report.problems.append(f"submission.json says {key} {doc.get(key)!r}, the files give {derived[key]!r}")
    return report


def format_report(report: Report) -> str:
    lines = [f"records folder {report.folder}", *(f"  ok: {n}" for n in report.notes)]
    lines += [f"  PROBLEM: {p}" for p in report.problems]
    lines.append("check passed" if report.ok else f"check FAILED: {len(report.problems)} problem(s)")
    return "\n".join(lines)
