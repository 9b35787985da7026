"""``golfpack inline SCRIPT --out FOLDER``: a participant's own training script, which imports
``golfpack`` as an installed library, becomes one self-contained records script.

The user's source stays as written (readable, below a marker); above it go the closure of
golfpack's public API for one pipeline (the API, the calibration, the fill, the pipeline's
encoders and decoders, and ``golfpack/_packed.py``: the pipeline as data, ``codec/rules.py``), minified and
compressed into a Latin-1 literal, and the one line that installs it as ``golfpack``
(``records/layout.py: render_inline``). ``requirements.txt`` lists the third-party
distributions the packed code and the user's own imports need. The script is read as data
(parsed, never run or imported) and the folder is written atomically, never over existing
files without ``force``.
"""
from __future__ import annotations

import ast
import importlib.metadata
import io
import re
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .. import CHALLENGE_CAP, __all__ as API_NAMES
from ..codec.encoders.intq import RTN
from ..codec.allocatable import allocates
from ..codec.rules import PACKED_PATH, packed_source
from ..codec.spec import load_spec
from ..model.files import atomic_write_bytes, read_regular
from .bundle import DISTRIBUTIONS, INLINE_STYLE, build_bundle, imports_of, module_path, ships_in_records
from .records.layout import INLINE_BOOT, INLINE_INSTALL, INLINE_LINE, SCRIPT, InlineParts, inline_prefix, \
    latin1_literal, pipeline_label, render_inline, \
    split_user_source
from .version import golfpack_version

MAX_SCRIPT_BYTES = 1 << 20  # a training script; the #1 record's is about 50 KB
API = "golfpack"
DECODE_ENTRY = "golfpack.codec.decoders.chain"  # with the stages' decoders: the decode path, for the ledger
DECODE_ROOTS = ("read_container", "decode_container")  # what reading a model file calls
FILL_FUNCTION = "_fill"  # the API's only way to the fill: never reached under a pipeline that does not fill


class InlineError(ValueError):
    """The script cannot be inlined: it is unreadable, not Python, or needs what cannot ship."""


@dataclass(frozen=True)
class InlineResult:
    script: Path
    requirements: tuple[str, ...]
    user_bytes: int  # the user's source as written
    golfpack_bytes: int  # everything golfpack added: header, bundle, loader, marker
    decode_bytes: int  # golfpack's decode path alone (decoders, container reader, loader): its literal and install line
    modules: int  # golfpack modules packed

    @property
    def total_bytes(self) -> int:
        return self.user_bytes + self.golfpack_bytes

    @property
    def encode_bytes(self) -> int:
        return self.golfpack_bytes - self.decode_bytes


def read_script(path: Path) -> str:
    """The user's script as ASCII text (:func:`ascii_source`): a regular file, bounded, UTF-8,
    valid Python."""
    data = read_regular(path, MAX_SCRIPT_BYTES)
    if re.fullmatch(INLINE_LINE, data.split(b"\n")[1:2][0].decode("latin-1") if b"\n" in data else ""):
        raise InlineError(f"{path}: already a script golfpack inline wrote; inline your own script")
    try:
        text = data.decode("utf-8")
        ast.parse(text, str(path))
    except UnicodeDecodeError:
        raise InlineError(f"{path}: not UTF-8 text") from None
    except SyntaxError as e:
        raise InlineError(f"{path}: not valid Python (line {e.lineno}: {e.msg})") from None
    return ascii_source(text, path)


def escaped(text: str) -> str:
    return "".join(c if ord(c) < 128 else f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}" for c in text)


def ascii_source(text: str, path: Path) -> str:
    """``text`` with every non-ASCII character in a string literal or a comment written as its
    ``\\u`` escape. Why: an inlined script is Latin-1 source (the bundle literal holds a byte per
    character), in which a UTF-8 ``"\u2581"`` (the challenge's own tokenizer check) would read as
    three other characters. The result must parse to the same syntax tree as ``text``, so the
    escaping cannot change what the script does; where it would (a raw string, a non-ASCII
    name), the script is refused with the line to change."""
    if text.isascii():
        return text
    lines = text.splitlines(keepends=True)
    edits = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.string.isascii():
            continue
        (row, col), (end_row, end_col) = tok.start, tok.end
        raw = tok.type == tokenize.STRING and re.match(r"[A-Za-z]*", tok.string).group().lower().count("r")
        if tok.type not in (tokenize.STRING, tokenize.COMMENT, getattr(tokenize, "FSTRING_MIDDLE", -1)) or raw:
            raise InlineError(f"{path}: line {row} has a non-ASCII character outside a plain string or a comment; an "
                              "inlined script is Latin-1 source: write it as a \\u escape")
        edits.append((row, col, end_row, end_col, escaped(tok.string)))
    for row, col, end_row, end_col, new in reversed(edits):
        head, tail = lines[row - 1][:col], lines[end_row - 1][end_col:]
        lines[row - 1 : end_row] = [head + new + tail]
    out = "".join(lines)
    if not out.isascii() or ast.dump(ast.parse(out)) != ast.dump(ast.parse(text)):
        raise InlineError(f"{path}: its non-ASCII characters cannot be escaped without changing the script; an "
                          "inlined script is Latin-1 source: write them as \\u escapes")
    return out


def imported_modules(tree: ast.Module) -> set[str]:
    """Every absolute module the script imports, anywhere (lazy imports too)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module)
            if node.module == API:
                found.update(f"{API}.{a.name}" for a in node.names if a.name != "*")
    return found


def api_functions_used(tree: ast.Module) -> set[str] | None:
    """The names the script takes from ``golfpack`` (``from golfpack import x``, ``golfpack.x``),
    or None when it uses the module otherwise (passes it around, ``getattr``): then all of them."""
    aliases, used = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):  # `import golfpack [as g]`, and `import golfpack.x`, which binds golfpack
            aliases.update(a.asname or API for a in node.names
                           if a.name == API or (a.asname is None and a.name.startswith(API + ".")))
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module == API:
            if any(a.name == "*" for a in node.names):
                return None
            used.update(a.name for a in node.names)
    attribute_of = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            used.add(node.attr)
        elif isinstance(node, ast.Name) and node.id in aliases and id(node) not in attribute_of:
            return None
    return used


def unused_imports(tree: ast.Module, dead: Iterable[str] = ()) -> dict[str, set[str]]:
    """The imports of ``golfpack`` (the API module) that the script can never reach: those made
    inside API functions it neither calls nor reaches through the ones it calls (a script that
    never calls ``shard_batches`` carries no shard reader), and those only ``dead`` functions
    reach (:func:`inline_dead`: the fill under a packed pipeline that does not fill). Lazy
    imports are the API's rule (``api/__init__.py``), so a function's imports are exactly what
    calling it loads."""
    api = ast.parse(module_path(API)[1])
    functions = {n.name: n for n in api.body if isinstance(n, ast.FunctionDef)}
    callable_ = set(functions) - set(dead)
    used = api_functions_used(tree)
    used = callable_ if used is None else used  # the module used otherwise: every function may be called
    calls = {f: {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and n.id in callable_}
             for f, node in functions.items()}
    reach, todo = set(), [u for u in used if u in callable_]
    while todo:
        f = todo.pop()
        if f not in reach:
            reach.add(f)
            todo.extend(calls[f])

    def imports(nodes) -> set[str]:
        return {i.module for node in nodes for i in imports_of(API, node, True)}

    kept = imports(n for n in api.body if not isinstance(n, ast.FunctionDef)) | imports(functions[f] for f in reach)
    return {API: imports(functions.values()) - kept}


def own_modules(modules: set[str]) -> list[str]:
    """The API and the golfpack modules a script names beyond it (``modules``: what it imports;
    not the API's functions, not the packed pipeline)."""
    return sorted({API} | {m for m in modules if m.startswith(API + ".") and m != API + "._packed"
                           and m.removeprefix(API + ".") not in API_NAMES})


def inline_dead(tree: ast.Module, fills: bool) -> tuple[str, ...]:
    """What an inlined script's bundle drops though the API names it (``shake.py``'s ``dead``):
    the fill (``FILL_FUNCTION``), where the packed pipeline does not ``fills`` and the script
    names no golfpack module beyond the API (with one it could build a pipeline that fills) nor
    the fill's function itself."""
    if fills or len(own_modules(imported_modules(tree))) > 1 or FILL_FUNCTION in (api_functions_used(tree) or ()):
        return ()
    return (FILL_FUNCTION,)


def inline_roots(tree: ast.Module, stages: Iterable[str]) -> set[str]:
    """What an inlined script's bundle is shaken down to (``shake.py``): every name, attribute
    and string in the script, the pipeline's stage classes (``stages``, which the packed
    pipeline names in strings), and the whole API when the script uses it in a way its syntax
    does not show (``getattr``, passed around)."""
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names |= {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    names |= {a.asname or a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
              for a in n.names} | {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    return names | set(stages) | (set(API_NAMES) if api_functions_used(tree) is None else set())


def user_requirements(path: Path, modules: set[str]) -> set[str]:
    """The distributions of the script's third-party imports; an import that is neither the
    standard library, golfpack nor an installed distribution cannot ship in one file."""
    dists = importlib.metadata.packages_distributions()
    out = set()
    for top in sorted({m.split(".")[0] for m in modules} - {API, "__future__"} - set(sys.stdlib_module_names)):
        if top not in dists:
            raise InlineError(f"{path}: imports '{top}', which is neither the standard library nor an installed "
                              "distribution; a records script is one file: put that code in the script")
        out.add(DISTRIBUTIONS.get(top, dists[top][0]))
    return out


def inline(script: str | Path, out: str | Path, pipeline: str = "default", force: bool = False) -> InlineResult:
    script, out = Path(script), Path(out)
    if out.exists() and (not out.is_dir() or out.is_symlink()):
        raise InlineError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InlineError(f"{out}: not empty; choose a new folder or pass --force")
    text = read_script(script)
    tree = ast.parse(text)
    modules = imported_modules(tree)
    if not any(m == API or m.startswith(API + ".") for m in modules):
        raise InlineError(f"{script}: does not import golfpack; there is nothing to inline")
    requirements = user_requirements(script, modules)
    spec = load_spec(pipeline)
    dead = inline_dead(tree, spec.fill)
    extra = (RTN,) if not dead and any(allocates(r) for r in spec.rules) else ()  # what a fill codes with beyond the rules
    classes = sorted({type(s) for r in spec.rules for s in r.stages} | set(extra), key=lambda c: c.name)
    decoders = [c.decoder() for c in classes]
    # the API always (importing any golfpack module runs it first), and the modules the script names
    bundle = build_bundle(decoders, entries=[*own_modules(modules), *sorted({c.__module__ for c in classes})],
                          allowed=ships_in_records, style=INLINE_STYLE, data={PACKED_PATH: packed_source(spec, extra)},
                          prefix=inline_prefix(), unused=unused_imports(tree, dead),
                          roots=inline_roots(tree, [c.__name__ for c in classes]), dead=dead)
    decode = build_bundle(decoders, entries=[DECODE_ENTRY], allowed=ships_in_records, style=INLINE_STYLE,  # as packed
                          prefix=inline_prefix(), roots=DECODE_ROOTS)
    # the two lines that would carry it, as the script carries the whole bundle (and bench/code_bytes.py the record's)
    decode_lines = f"G={latin1_literal(decode.compressed)}\n{INLINE_INSTALL.format(boot=INLINE_BOOT[decode.codec])}\n"
    prefix, body = split_user_source(text)
    data = render_inline(InlineParts(golfpack_version(), pipeline_label(pipeline), bundle.codec, bundle.compressed,
                                     prefix, body))
    reqs = tuple(sorted(requirements | set(bundle.required)))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / SCRIPT, data, overwrite=force)
    atomic_write_bytes(out / "requirements.txt", "".join(f"{r}\n" for r in reqs).encode(), overwrite=force)
    user = len((prefix + body).encode())
    return InlineResult(out / SCRIPT, reqs, user, len(data) - user, len(decode_lines.encode("latin-1")),
                        len(bundle.files))


def format_inline(r: InlineResult) -> str:
    """The code-byte ledger ``golfpack inline`` prints."""
    return "\n".join([
        f"wrote {r.script} ({r.total_bytes:,} bytes) and requirements.txt: {', '.join(r.requirements)}",
        f"  your code         {r.user_bytes:>9,} bytes",
        f"  golfpack, total   {r.golfpack_bytes:>9,} bytes ({r.modules} modules, header, loader)",
        f"    encode path     {r.encode_bytes:>9,} bytes (the rest)",
        f"    decode path     {r.decode_bytes:>9,} bytes (decoders, container reader and loader, packed alone)",
        f"  left for weights  {CHALLENGE_CAP - r.total_bytes:>9,} bytes of the {CHALLENGE_CAP:,}",
    ])
