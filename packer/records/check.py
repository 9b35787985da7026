"""``golfpack check RECORDS_DIR``: re-derive every number of a records folder from its files.

Sizes come from the files on disk (``train_gpt.py``, each seed's model file), scores and
steps from the logs (``lines.parse_log``); ``submission.json`` must agree with them, and
every seed (the largest, not the mean) must fit the cap. The code must compile on the target
Python, and no code may hide outside the counted bytes.

The folder is someone else's, so it is read as hostile data: nothing in it is imported or run;
only regular files of the kinds a records folder holds are allowed (:data:`ALLOWED`; anything
else, a ``.pyc``, a folder, a link, a FIFO, is a problem and is never opened); every file is
size-bounded before it is read; ``train_gpt.py`` is accepted only in the exact shape ``submit``
writes (``submit.parse_script``), so the bundle read here is the one Python runs; seeds are
digits; and every string printed, file names included, is escaped.
"""
from __future__ import annotations

import ast
import hashlib
import json
import math
import os
import re
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ... import CHALLENGE_CAP
from ...model.console import printable
from ...model.files import read_regular
from .lines import LOG_FILE, MODEL_FILE, RunNumbers, log_name, name_pattern, seed_of_log, seed_run_id
from .loader import SETTINGS, read_bundle
from .layout import INLINE_LINE, SCRIPT, numbers_of, parse_script, silenced, summary

# What a records folder may hold: the script, the JSON, the README, the requirements, and each
# run's log and model file (RUN_ID: submit's seeds, or any name a run was given).
ALLOWED = re.compile(rf"train_gpt\.py|submission\.json|README\.md|requirements\.txt|{name_pattern(LOG_FILE)}"
                     rf"|{name_pattern(MODEL_FILE)}")
SEED = re.compile(r"[0-9]{1,19}")
MAX_ENTRIES = 1000  # files in a records folder: a handful per seed
MAX_JSON_BYTES = 1 << 20
VERSION = r"\s*(?:==|>=|<=|~=|!=|<|>)\s*[0-9][0-9A-Za-z.*+!_-]{0,40}"
REQUIREMENT = re.compile(rf"([A-Za-z0-9](?:[A-Za-z0-9._-]{{0,98}}[A-Za-z0-9])?)(?:{VERSION}(?:\s*,{VERSION}){{0,4}})?")
FLOAT_TOL = 5.5e-9  # submission.json rounds to 8 decimals (the challenge's)


@dataclass
class Report:
    folder: Path
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def bundle_of(data: bytes) -> dict[str, str]:
    """The files packed in a records script (path -> source, and ``settings.json``), read as
    data: the script must be in ``submit``'s exact shape, and its bundle is read by the
    loader's own bounded reader (never run)."""
    parts = parse_script(data)
    return read_bundle(parts.codec, parts.compressed)


def compiles(path: str, source: str, target: tuple[int, int]) -> ast.Module | str:
    """``source``'s syntax tree if it compiles on Python ``target``, else why not (bounded input:
    a deep expression is a RecursionError or MemoryError here, reported, not raised)."""
    try:
        with silenced():
            tree = ast.parse(source, path, feature_version=target)
            compile(tree, path, "exec")
    except SyntaxError as e:
        return f"{e.msg}, line {e.lineno}"
    except (RecursionError, MemoryError, ValueError):
        return "nested too deeply to compile"
    return tree


def list_folder(report: Report, folder: Path) -> set[str]:
    """The names of the folder's regular files of allowed kinds; every other entry is a
    problem (it is neither followed nor opened)."""
    names = set()
    with os.scandir(folder) as it:
        for i, entry in enumerate(it):
            if i >= MAX_ENTRIES:
                report.problems.append(f"more than {MAX_ENTRIES} entries in the folder")
                break
            mode = entry.stat(follow_symlinks=False).st_mode
            what = "a symbolic link" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode) else \
                None if stat.S_ISREG(mode) else "not a regular file"
            if what is None and not ALLOWED.fullmatch(entry.name):
                what = "not a file a records folder holds (code outside train_gpt.py is not counted)"
            if what:
                report.problems.append(f"{entry.name}: {what}")
            else:
                names.add(entry.name)
    return names


def check_code(report: Report, folder: Path, target: tuple[int, int]) -> list[ast.Module]:
    """The script's packed modules, each compiled; returns the syntax trees of those that compile."""
    try:
        data = read_regular(folder / SCRIPT, CHALLENGE_CAP)
    except (OSError, ValueError) as e:
        report.problems.append(f"{SCRIPT}: {e}")
        return []
    try:
        files = bundle_of(data)
    except ValueError as e:
        report.problems.append(f"{SCRIPT}: {e}")
        return []
    modules = {p: s for p, s in files.items() if p != SETTINGS}
    yours = sorted(p for p in modules if not p.startswith("golfpack/"))
    report.notes.append(f"{SCRIPT}: {len(data):,} bytes, {len(modules)} packed modules, compiles on "
                        f"Python {target[0]}.{target[1]}")
    report.notes.append(f"packed: {len(modules) - len(yours)} modules of golfpack; not golfpack's (review them): "
                        f"{', '.join(yours) or 'none'}")
    return compiled(report, modules, target)


def compiled(report: Report, sources: dict[str, str], target: tuple[int, int]) -> list[ast.Module]:
    """The syntax trees of the ``sources`` that compile on ``target``; each that does not is a problem."""
    ok = []
    for path, src in sorted(sources.items()):
        tree = compiles(path, src, target)
        if isinstance(tree, str):
            report.problems.append(f"{path}: does not compile on Python {target[0]}.{target[1]} ({tree})")
        else:
            ok.append(tree)
    return ok


def close(a: float, b: object) -> bool:
    return isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) and abs(a - b) <= FLOAT_TOL


def check_seed(report: Report, folder: Path, names: set[str], seed: str, r: RunNumbers, claimed: object) -> None:
    code = (folder / SCRIPT).stat().st_size if SCRIPT in names else -1
    if r.code_bytes != code:
        report.problems.append(f"seed {seed}: log says code {r.code_bytes:,} bytes, {SCRIPT} is {code:,}")
    size = -1
    if r.model_file not in names or not r.model_file.endswith(".gpak"):
        report.problems.append(f"seed {seed}: model file '{r.model_file}' named by the log is not in the folder")
    else:
        try:
            model = read_regular(folder / r.model_file, CHALLENGE_CAP + 1)  # one byte over is still reported as over
        except (OSError, ValueError) as e:
            report.problems.append(f"seed {seed}: {e}")
            model = b""
        size = len(model)
        if size != r.model_bytes or hashlib.sha256(model).hexdigest() != r.model_sha256:
            report.problems.append(f"seed {seed}: {r.model_file} is {size:,} bytes / not the file the log hashed")
    total = code + (size if size >= 0 else r.model_bytes)
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
            report.problems.append(f"seed {seed}: submission.json says {key} {claimed.get(key)!r:.40}, the log {value!r}")
    for key, value in floats.items():
        if not close(value, claimed.get(key)):
            report.problems.append(f"seed {seed}: submission.json says {key} {claimed.get(key)!r:.40}, the log {value!r}")
    report.notes.append(f"seed {seed}: val_bpb {r.val_bpb:.8f}, {r.artifact_bytes:,} bytes "
                        f"({CHALLENGE_CAP - r.artifact_bytes:,} under the cap), {r.steps} steps")


def unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object whose keys are all different: a second ``val_bpb`` is not a value to choose from."""
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"key {next(k for k in keys if keys.count(k) > 1)!r:.40} appears twice")
    return dict(pairs)


def distribution_key(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def check_requirements(report: Report, folder: Path, names: set[str], trees: list[ast.Module]) -> None:
    """``requirements.txt``: plain distribution names, each with optional versions (no options,
    URLs, paths or editable installs: ``pip install -r`` would follow them), and only the
    distributions that ``trees`` (the packed code, the user's) import."""
    from importlib.metadata import packages_distributions

    from ..bundle import DISTRIBUTIONS
    from ..inline import imported_modules

    if "requirements.txt" not in names:
        return
    try:
        text = read_regular(folder / "requirements.txt", MAX_JSON_BYTES).decode("utf-8")
    except (OSError, ValueError) as e:
        report.problems.append(f"requirements.txt: unreadable ({e})")
        return
    tops = {m.split(".")[0] for tree in trees for m in imported_modules(tree)}
    installed = packages_distributions()
    wanted = {distribution_key(d) for t in tops - set(sys.stdlib_module_names) - {"golfpack"}
              for d in [DISTRIBUTIONS.get(t, t), *installed.get(t, [])]}
    for i, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = REQUIREMENT.fullmatch(line)
        if m is None:
            report.problems.append(f"requirements.txt line {i}: only a distribution name with versions is allowed, "
                                   f"got {line!r:.60}")
        elif distribution_key(m.group(1)) not in wanted:
            report.problems.append(f"requirements.txt line {i}: '{m.group(1)}' is not imported by the script's code")


def read_submission(report: Report, folder: Path, names: set[str]) -> dict:
    try:
        if "submission.json" not in names:
            raise ValueError("missing")
        doc = json.loads(read_regular(folder / "submission.json", MAX_JSON_BYTES).decode("utf-8"),
                         object_pairs_hook=unique_keys)
        if not isinstance(doc, dict) or not isinstance(doc.get("seed_results"), dict) or not doc["seed_results"]:
            raise ValueError("no seed_results table")
    except (OSError, ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        report.problems.append(f"submission.json: unreadable ({e})")
        return {"seed_results": {}}
    return doc


def target_python(report: Report, doc: dict) -> tuple[int, int]:
    """The Python the folder was built for (``golfpack.python``: ``[3, minor]``), else this one."""
    python = doc.get("golfpack", {}).get("python") if isinstance(doc.get("golfpack"), dict) else None
    if python is None:
        return sys.version_info[:2]
    if not (isinstance(python, list) and len(python) == 2 and python[0] == 3 and isinstance(python[1], int)
            and not isinstance(python[1], bool) and 0 <= python[1] <= 99):
        report.problems.append(f"submission.json: golfpack.python must be [3, minor], got {python!r:.40}")
        return sys.version_info[:2]
    return 3, python[1]


def check_folder(folder: str | Path, target: tuple[int, int] | None = None) -> Report:
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        raise ValueError(f"{printable(folder)}: not a records folder (a folder, not a link)")
    report = Report(folder)
    names = list_folder(report, folder)
    doc = read_submission(report, folder, names)
    target = target or target_python(report, doc)
    if is_inlined(folder, names):
        from .check_inline import check_inline

        check_inline(report, folder, names, doc, target)
        return report
    check_requirements(report, folder, names, check_code(report, folder, target))
    seeds = seeds_of(report, doc)
    if not seeds:
        return report
    logs = {seed for n in names if (seed := seed_of_log(n)) is not None}
    for extra in sorted(logs - set(seeds)):
        report.problems.append(f"{log_name(seed_run_id(extra))}: a seed's log that submission.json leaves out")
    missing = [s for s in seeds if log_name(seed_run_id(s)) not in names]
    for s in missing:
        report.problems.append(f"{log_name(seed_run_id(s))}: no log for seed {s}")
    try:
        numbers = numbers_of(folder, [s for s in seeds if s not in missing])
    except (OSError, ValueError) as e:  # LogError is a ValueError
        report.problems.append(str(e))
        return report
    if missing:
        return report
    for seed, r in numbers.items():
        check_seed(report, folder, names, seed, r, doc["seed_results"].get(seed))
    derived = summary(numbers)
    for key in ("val_bpb", "val_loss", "val_bpb_std", "val_loss_std"):
        if not close(derived[key], doc.get(key)):
            report.problems.append(f"submission.json says {key} {doc.get(key)!r:.40}, the logs give {derived[key]!r}")
    for key in ("bytes_total", "bytes_code"):
        if doc.get(key) != derived[key]:
            report.problems.append(f"submission.json says {key} {doc.get(key)!r:.40}, the files give {derived[key]!r}")
    return report


def is_inlined(folder: Path, names: set[str]) -> bool:
    """Whether the folder's script says ``golfpack inline`` wrote it (its second line); the
    inline check then holds it to that shape."""
    if SCRIPT not in names:
        return False
    try:
        head = read_regular(folder / SCRIPT, CHALLENGE_CAP)[:400].split(b"\n")
    except (OSError, ValueError):
        return False
    return len(head) > 1 and re.fullmatch(INLINE_LINE, head[1].decode("latin-1")) is not None


def seeds_of(report: Report, doc: dict) -> list[str]:
    """submission.json's seeds, each a number; none when any is not."""
    seeds = [str(s) for s in doc["seed_results"]]
    bad = [s for s in seeds if not SEED.fullmatch(s)]
    for s in bad:
        report.problems.append(f"submission.json: seed {s!r:.40} is not a number")
    return [] if bad else seeds


def format_report(report: Report) -> str:
    """The report, every line escaped: a file name or a log can hold terminal controls that
    would repaint the screen (``\\r``, ``ESC[1A``) over the problems."""
    lines = [f"records folder {report.folder}", *(f"  ok: {n}" for n in report.notes)]
    lines += [f"  PROBLEM: {p}" for p in report.problems]
    lines.append("check passed" if report.ok else f"check FAILED: {len(report.problems)} problem(s)")
    return "\n".join(printable(line) for line in lines)
