"""``golfpack check`` of a folder whose ``train_gpt.py`` ``golfpack inline`` wrote.

What can be re-derived without running the user's code: the script's shape (``parse_inline``:
the bundle read is the one Python unpacks) and that all of it compiles; that the golfpack
packed in it is this golfpack's own, module for module, so this golfpack's decoders are the
packed ones; then, per seed, the model file named by the log, its size and hash, the cap on
script + model file, and the file decoded by those decoders (every check of the container
reader: sizes, hash, bounded work); ``submission.json`` against the logs' lines
(``lines.parse_own_log``). Not re-derived: the score, which needs the user's model class and
the validation data; the report says so.
"""
from __future__ import annotations

import ast
import hashlib
import statistics
from pathlib import Path
from types import SimpleNamespace

from ... import CHALLENGE_CAP
from ...codec.decoders.chain import decode_container
from ...codec.decoders.container import read_container
from ...codec.rules import PACKED_NAMES, PACKED_PATH
from ...model.console import one_line
from ...model.files import read_regular
from ..bundle import INLINE_STYLE, minify, module_path
from ..inline import inline_dead, inline_roots
from ..rename import global_renames
from ..shake import shake
from ..version import golfpack_version
from .check import FLOAT_TOL, Report, check_requirements, close, compiled, seeds_of
from .layout import SCRIPT, InlineParts, parse_inline, read_inline_bundle, silenced
from .lines import MAX_LOG_BYTES, LogError, log_name, model_name, parse_own_log, seed_run_id

MAX_PACKED_ITEMS = 64  # rules, stages, globs, params: each far beyond any pipeline's


def packed_literals(source: str) -> SimpleNamespace:
    """The packed pipeline module read as data (never run): a docstring, then exactly
    :data:`PACKED_NAMES` assigned literals, in order; ``STAGES`` a table of names."""
    with silenced():
        body = ast.parse(source).body
    doc = body[:1] if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) else []
    rest = body[len(doc):]
    if [getattr(n.targets[0], "id", None) if isinstance(n, ast.Assign) and len(n.targets) == 1 else None
            for n in rest] != list(PACKED_NAMES):
        raise ValueError(f"{PACKED_PATH}: not the packed pipeline golfpack inline writes ({', '.join(PACKED_NAMES)})")
    values = {n.targets[0].id: ast.literal_eval(n.value) for n in rest}
    stages, rules = values["STAGES"], values["RULES"]
    if not (isinstance(stages, dict) and len(stages) <= MAX_PACKED_ITEMS
            and all(isinstance(k, str) and isinstance(v, str) for k, v in stages.items())):
        raise ValueError(f"{PACKED_PATH}: STAGES is not a table of names")
    if not (isinstance(values["NAME"], str) and isinstance(values["FILL"], bool) and isinstance(rules, list)
            and 0 < len(rules) <= MAX_PACKED_ITEMS and all(map(packed_rule, rules))):
        raise ValueError(f"{PACKED_PATH}: NAME, FILL or RULES is not what golfpack inline writes (a name, true or false, "
                         f"1..{MAX_PACKED_ITEMS} rules of (name, globs, roles, allocate, chain))")
    return SimpleNamespace(**values)


def packed_rule(rule: object) -> bool:
    """A packed rule, typed at every depth: ``(name, globs, roles, allocate, ((stage, params), ...))``."""
    strings = lambda t: isinstance(t, tuple) and len(t) <= MAX_PACKED_ITEMS and all(isinstance(x, str) for x in t)  # noqa: E731
    scalar = lambda v: isinstance(v, (str, int, float, bool))  # noqa: E731
    if not (isinstance(rule, tuple) and len(rule) == 5):
        return False
    name, globs, roles, allocate, chain = rule
    return (isinstance(name, str) and strings(globs) and strings(roles) and isinstance(allocate, bool)
            and isinstance(chain, tuple) and 0 < len(chain) <= MAX_PACKED_ITEMS
            and all(isinstance(s, tuple) and len(s) == 2 and isinstance(s[0], str) and isinstance(s[1], dict)
                    and len(s[1]) <= MAX_PACKED_ITEMS and all(isinstance(k, str) and scalar(v) for k, v in s[1].items())
                    for s in chain))


def packed_pipeline(packed: SimpleNamespace, source: str) -> dict:
    """The decoder table of a packed pipeline whose stages are all golfpack's own built-in ones
    (checked by name before any is imported), and which ``codec/rules.py: packed_source`` writes
    back byte for byte from the stages it builds: nothing in the module but the pipeline."""
    from ...codec.registry import discover
    from ...codec.rules import packed_classes, packed_source, packed_spec

    registry = {n: r for n, r in discover().items() if r.cls is not None and r.origin == "builtin"}
    unknown = [n for n, ref in packed.STAGES.items() if n not in registry or
               f"{registry[n].cls.__module__}:{registry[n].cls.__qualname__}" != ref]
    if unknown:
        raise ValueError(f"{PACKED_PATH}: stages that are not golfpack's built-in ones: {', '.join(unknown)}")
    try:
        classes = packed_classes(packed)
        again = packed_source(packed_spec(packed), tuple(classes.values()))
    except (TypeError, ValueError, KeyError, AttributeError) as e:  # StageError is a ValueError
        raise ValueError(f"{PACKED_PATH}: not a pipeline golfpack can build ({one_line(e)})") from None
    if again != source:
        raise ValueError(f"{PACKED_PATH}: not in the form golfpack inline writes (something added or re-spelled)")
    return {n: c.decoder() for n, c in classes.items()}


def shaken_to(parts: InlineParts, packed: SimpleNamespace) -> tuple[set[str], tuple[str, ...]] | None:
    """The names ``inline`` shook this script's bundle down to and those it dropped
    (``inline.py: inline_roots, inline_dead``), or None when the user's source does not parse."""
    try:
        with silenced():
            user = ast.parse(parts.prefix + parts.body)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    return inline_roots(user, [ref.rsplit(":", 1)[-1] for ref in packed.STAGES.values()]), inline_dead(user, packed.FILL)


def foreign_modules(files: dict[str, str], roots: set[str], dead: tuple[str, ...] = ()) -> list[str]:
    """The packed modules whose code is not this golfpack's own, shaken down to ``roots`` less
    ``dead`` and minified as inline packs it (a path outside ``golfpack/`` is foreign without a
    look-up: nothing it names is imported)."""
    out, own = [], {}
    for path in sorted(files):
        if path == PACKED_PATH:
            continue
        if not path.startswith("golfpack/"):  # never looked up: finding a module can import its parent package
            out.append(path)
            continue
        module = path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        try:
            own_path, own[path] = module_path(module)
        except ValueError:
            own_path = None
        if own_path != path:
            out.append(path)
            own.pop(path, None)
    shaken = shake(own, roots, dead)
    renames = global_renames(shaken, roots)
    return sorted(out + [p for p in own if minify(shaken[p], p, INLINE_STYLE, renames) != files[p]])


def check_inline(report: Report, folder: Path, names: set[str], doc: dict, target: tuple[int, int]) -> None:
    data = read_regular(folder / SCRIPT, CHALLENGE_CAP)
    try:
        parts = parse_inline(data)
        files = read_inline_bundle(parts.codec, parts.compressed)
        packed = packed_literals(files.get(PACKED_PATH, ""))
    except (ValueError, SyntaxError) as e:  # MalformedBundle is a ValueError
        report.problems.append(f"{SCRIPT}: {e}")
        return
    except (RecursionError, MemoryError):  # a packed settings module nested beyond the parser
        report.problems.append(f"{SCRIPT}: {PACKED_PATH} is nested too deeply to read")
        return
    check_requirements(report, folder, names, compiled(report, {**files, SCRIPT: data.decode("latin-1")}, target))
    if parts.version != golfpack_version():
        report.problems.append(f"{SCRIPT}: inlined by golfpack {parts.version}; this is {golfpack_version()}, whose "
                               "decoders cannot vouch for its packed ones (check it with that version)")
        return
    shaking = shaken_to(parts, packed)
    if shaking is None:  # compiled() has said why
        return
    foreign = foreign_modules(files, *shaking)
    if foreign:
        report.problems.append(f"{SCRIPT}: packed code is not golfpack {parts.version}'s own: {', '.join(foreign[:5])}")
        return
    try:
        table = packed_pipeline(packed, files[PACKED_PATH])
    except ValueError as e:
        report.problems.append(str(e))
        return
    report.notes.append(f"{SCRIPT}: {len(data):,} bytes, your code {len((parts.prefix + parts.body).encode()):,}; "
                        f"{len(files)} packed modules, golfpack {parts.version}'s own, compile on Python "
                        f"{target[0]}.{target[1]}")
    seeds = seeds_of(report, doc)
    runs = {}
    for seed in seeds:
        log = log_name(seed_run_id(seed))
        try:
            runs[seed] = parse_own_log(read_regular(folder / log, MAX_LOG_BYTES).decode("utf-8", "replace"), log)
        except (OSError, LogError) as e:
            report.problems.append(f"seed {seed}: {e}")
    for seed, r in runs.items():
        check_own_seed(report, folder, names, seed, r, doc["seed_results"].get(seed), len(data), table)
    if runs and len(runs) == len(seeds):
        mean = statistics.fmean(r.val_bpb for r in runs.values())
        if not close(mean, doc.get("val_bpb")):
            report.problems.append(f"submission.json says val_bpb {doc.get('val_bpb')!r:.40}, the logs give {mean!r}")
    report.notes.append("not re-derived: val_bpb, which needs your model class and the validation data "
                        "(run train_gpt.py to reproduce it)")


def check_own_seed(report: Report, folder: Path, names: set[str], seed: str, r, claimed: object, code: int,
                   table: dict) -> None:
    if r.model_file != model_name(seed_run_id(seed)) or r.model_file not in names:
        report.problems.append(f"seed {seed}: the log names model file '{r.model_file}', expected "
                               f"{model_name(seed_run_id(seed))} in the folder")
        return
    model = read_regular(folder / r.model_file, CHALLENGE_CAP + 1)
    if len(model) != r.model_bytes or hashlib.sha256(model).hexdigest() != r.model_sha256:
        report.problems.append(f"seed {seed}: {r.model_file} is {len(model):,} bytes / not the file the log hashed")
    if r.code_bytes != code or r.artifact_bytes != code + r.model_bytes:
        report.problems.append(f"seed {seed}: the log says code {r.code_bytes:,} and total {r.artifact_bytes:,} bytes; "
                               f"{SCRIPT} is {code:,}, so the total is {code + len(model):,}")
    total = code + len(model)
    if total > CHALLENGE_CAP:
        report.problems.append(f"seed {seed}: {total:,} bytes, {total - CHALLENGE_CAP:,} over the cap of "
                               f"{CHALLENGE_CAP:,}")
    try:
        container = read_container(model)
        state = decode_container(container, table)
    except ValueError as e:  # ContainerError, DecodeError
        report.problems.append(f"seed {seed}: {r.model_file} does not decode: {e}")
        return
    if not isinstance(claimed, dict):
        report.problems.append(f"seed {seed}: no entry in submission.json's seed_results")
        return
    if claimed.get("artifact_bytes") != total or isinstance(claimed.get("artifact_bytes"), bool):
        report.problems.append(f"seed {seed}: submission.json says artifact_bytes "
                               f"{claimed.get('artifact_bytes')!r:.40}, the files give {total!r}")
    if not (isinstance(claimed.get("val_bpb"), float) and abs(claimed["val_bpb"] - r.val_bpb) <= FLOAT_TOL):
        report.problems.append(f"seed {seed}: submission.json says val_bpb {claimed.get('val_bpb')!r:.40}, "
                               f"the log {r.val_bpb!r}")
    report.notes.append(f"seed {seed}: {r.model_file} decodes ({len(state)} tensors, {container.numel:,} values); "
                        f"{total:,} bytes ({CHALLENGE_CAP - total:,} under the cap); log val_bpb {r.val_bpb:.8f}")
