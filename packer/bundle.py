"""The code bundle and the bootstrap: what an artifact runs, minified and compressed.

One rule decides what ships, declared here: shipped code lives in ``SHIPPED_PACKAGES`` (model,
trainer, the codec's decoders, the packer's runtime) and never imports the build side; a
records script may also ship what :func:`ships_in_records` allows; the bundle is the
import closure of the runtime plus the decoders the pipeline uses. The closure is computed
from every import statement (module level and lazy), so an import of build-side code is a
:class:`BundleError` at build time, not a crash inside the artifact. A decoder module, whether
golfpack's or a plugin's, may import only the standard library, ``DECODER_LIBRARIES`` and
modules of its own package's ``decoders``. A model module (``model.builders``: the user's
own architecture) ships the same way; it may import the standard library, ``MODEL_LIBRARIES``,
golfpack's shipped code and modules of its own package.

The third-party distributions the shipped code imports are recorded as the artifact's
requirements; one imported only inside ``try: ... except ImportError`` is optional.
"""
from __future__ import annotations

import ast
import base64
import importlib.util
import lzma
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Container, Iterable, Mapping

import python_minifier

if TYPE_CHECKING:  # a type only: checking a records script needs the minifier, not torch
    from ..codec.decoders.chain import DecoderSpec
from .runtime import artifact as artifact_format
from .runtime import bootstrap as bootstrap_module
from .runtime import finder as finder_module
from .runtime.finder import pack_bundle
from .cache import cached
from .rename import Renamer, global_renames
from .shake import shake

SHIPPED_PACKAGES = ("golfpack.model", "golfpack.trainer", "golfpack.codec.decoders", "golfpack.packer.runtime")
RECORDS_PACKAGES = ("golfpack.codec",)  # a records script also encodes: the whole codec ...
RECORDS_MODULES = ("golfpack", "golfpack.packer.records", "golfpack.packer.records.script",
                   "golfpack.packer.records.lines", "golfpack.packer.encode")  # ... the public API, its own
# entry, log lines, and build's encode path
RUNTIME_ENTRY = "golfpack.packer.runtime.commands"
DECODER_LIBRARIES = {"numpy", "torch", "constriction", "zstandard", "brotli"}
MODEL_LIBRARIES = {"numpy", "torch"}
DISTRIBUTIONS = {"brotli": "Brotli", "sentencepiece": "sentencepiece", "numpy": "numpy", "torch": "torch",
                 "constriction": "constriction", "zstandard": "zstandard", "tqdm": "tqdm"}
NAMESPACE_INIT = '"""golfpack, as shipped inside an artifact."""\n'


class BundleError(ValueError):
    """The code bundle would be incomplete or would ship a disallowed import."""


@dataclass(frozen=True)
class CodeBundle:
    files: dict[str, str]  # path -> minified source
    raw_bytes: int
    minified_bytes: int
    compressed: bytes
    codec: str  # "lzma" or "brotli"
    required: tuple[str, ...]  # third-party distributions the shipped code needs
    optional: tuple[str, ...]  # ... and those it uses only when installed


def is_shipped(module: str) -> bool:
    """In a shipped package, or one of their parent packages (whose ``__init__`` ships,
    import-free); never ``golfpack`` itself, the public API (build side: an artifact ships an
    empty stand-in, ``NAMESPACE_INIT``, as the parent of its modules)."""
    return module != "golfpack" and \
        any(module == p or module.startswith(p + ".") or p.startswith(module + ".") for p in SHIPPED_PACKAGES)


def ships_in_records(module: str) -> bool:
    """What a records script may ship: what artifacts ship, the codec (it encodes), and
    ``RECORDS_MODULES``; never the rest of the packer."""
    return is_shipped(module) or module in RECORDS_MODULES or \
        any(module == p or module.startswith(p + ".") for p in RECORDS_PACKAGES)


def is_decoder_module(module: str) -> bool:
    """A module in some package's ``decoders`` (golfpack's or a plugin's): shipped, and held to
    ``DECODER_LIBRARIES``."""
    return ".decoders" in f".{module}"


@lru_cache(maxsize=None)
def _spec(name: str):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def module_path(name: str) -> tuple[str, str]:
    """``(path inside the bundle, source)`` of an importable module."""
    spec = _spec(name)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        raise BundleError(f"cannot find the source of module '{name}'")
    rel = name.replace(".", "/") + ("/__init__.py" if spec.submodule_search_locations is not None else ".py")
    return rel, Path(spec.origin).read_text(encoding="utf-8")


@dataclass(frozen=True)
class Import:
    module: str  # absolute name
    optional: bool  # inside try/except ImportError


def _guarded(handlers: list[ast.ExceptHandler]) -> bool:
    names = {ast.unparse(h.type) for h in handlers if h.type is not None}
    return bool(names & {"ImportError", "ModuleNotFoundError"})


def imports_of(name: str, source: str | ast.AST, is_pkg: bool) -> list[Import]:
    """Every module ``source`` (module ``name``'s code, or a node of its syntax tree) imports,
    anywhere in it (lazy imports run too)."""
    package = name if is_pkg else name.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, optional: bool) -> None:
        if isinstance(node, ast.If) and "sys.version_info" in ast.unparse(node.test) and \
                {n.id for n in ast.walk(node.test) if isinstance(n, ast.Name)} == {"sys"}:
            taken = eval(compile(ast.Expression(node.test), name, "eval"), {"sys": sys})  # our own source's test
            for child in node.body if taken else node.orelse:
                visit(child, optional)
            return
        if isinstance(node, ast.Try):
            guarded = optional or _guarded(node.handlers)
            for child in node.body:
                visit(child, guarded)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, optional)
            return
        if isinstance(node, ast.Import):
            found.extend(Import(a.name, optional) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.append(Import(mod, optional))
            # `from pkg import sub` imports a module too when `sub` is one
            found.extend(Import(f"{mod}.{a.name}", optional) for a in node.names if _spec(f"{mod}.{a.name}") is not None)
        for child in ast.iter_child_nodes(node):
            visit(child, optional)

    visit(ast.parse(source) if isinstance(source, str) else source, False)
    return found


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@dataclass
class _Closure:
    sources: dict[str, tuple[str, str]]  # module -> (bundle path, source)
    third_party: dict[str, bool]  # top-level name -> optional


def closure(decoders: Iterable[DecoderSpec], models: Iterable[str] = (), entries: Iterable[str] = (RUNTIME_ENTRY,),
            allowed: Callable[[str], bool] = is_shipped, unused: Mapping[str, Container[str]] | None = None) -> _Closure:
    """The modules the artifact needs: the import closure of the ``entries`` (the runtime; a
    records script adds its stages' encoders), the decoders' and the model modules'. Every
    golfpack module in it must be ``allowed``. ``unused``: module -> the imports of it not to
    follow (those of API functions an inlined script never calls, ``inline.py: unused_imports``)."""
    decoder_modules = {d.module for d in decoders}
    model_modules = set(models) - {"golfpack.model.gpt"}
    model_packages = {m.split(".")[0] for m in model_modules}
    entries = sorted(set(entries))
    first_party = {"golfpack"} | {m.split(".")[0] for m in [*decoder_modules, *entries]} | model_packages
    todo = [*entries, *sorted(decoder_modules), *sorted(model_modules)]
    seen: dict[str, tuple[str, str]] = {}
    third: dict[str, bool] = {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path, source = module_path(name)
        seen[name] = (path, source)
        todo.extend(p for p in _parents(name) if p != "golfpack")  # the API ships only where it is imported
        decoder = is_decoder_module(name)
        model = name.split(".")[0] in model_packages
        for imp in imports_of(name, source, path.endswith("__init__.py")):
            if imp.module in (unused or {}).get(name, ()):
                continue
            top = imp.module.split(".")[0]
            if top in first_party:
                if _spec(imp.module) is None:  # `from pkg import name` where name is not a module
                    continue
                if top == "golfpack" and not allowed(imp.module):
                    raise BundleError(f"shipped module '{name}' imports '{imp.module}', which is build-side code "
                                      "and does not ship")
                if decoder and not is_decoder_module(imp.module) and imp.module not in _parents(name):
                    raise _decoder_import_error(name, imp.module)
                if model and top != "golfpack" and top != name.split(".")[0]:
                    raise _model_import_error(name, imp.module)
                todo.append(imp.module)
            elif top not in sys.stdlib_module_names and top != "__future__":
                if decoder and top not in DECODER_LIBRARIES:
                    raise _decoder_import_error(name, imp.module)
                if model and top not in MODEL_LIBRARIES:
                    raise _model_import_error(name, imp.module)
                third[top] = third.get(top, True) and imp.optional
    seen.setdefault("golfpack", ("golfpack/__init__.py", NAMESPACE_INIT))
    return _Closure(seen, third)


def _decoder_import_error(name: str, imported: str) -> BundleError:
    return BundleError(f"decoder module '{name}' imports '{imported}'; decoders may import only the standard "
                       f"library, {', '.join(sorted(DECODER_LIBRARIES))} and decoders")


def _model_import_error(name: str, imported: str) -> BundleError:
    return BundleError(f"model module '{name}' imports '{imported}'; a model module may import only the standard "
                       f"library, {', '.join(sorted(MODEL_LIBRARIES))}, golfpack's shipped code and modules of its "
                       "own package (anything else would not ship with it)")


class _EraseFieldTypes(ast.NodeTransformer):
    """Class-level annotations only declare (dataclass) fields at run time; their types are
    never read, so ``x: dict[str, Any] | None = None`` ships as ``x: int = None``. ClassVar,
    InitVar and KW_ONLY annotations, which dataclasses do read, are kept."""

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.ClassDef:
        for stmt in node.body:
            if isinstance(stmt, ast.AnnAssign) and not any(
                    k in ast.unparse(stmt.annotation) for k in ("ClassVar", "InitVar", "KW_ONLY")):
                stmt.annotation = ast.Name("int", ast.Load())
        self.generic_visit(node)
        return node


class _PointToMessages(ast.NodeTransformer):
    """Each raised error's arguments become a pointer to its message, ``ctxans.py:123``: the line
    of golfpack's source, at the version the script names, that spells it. So do the message
    arguments of a module's ``_expect(cond, *message)`` helper (an assert that raises its own
    error). An inlined script keeps every refusal but ships no prose: its own code reads only
    the files it wrote, and ``golfpack check`` reads them with the installed golfpack, messages
    and all. ``SystemExit`` keeps its argument (an exit status or what to print). A stage's
    one-line help (a class's ``summary = "..."``: ``Stage.summary``, which only ``golfpack
    stages`` reads) is prose too, and goes (the class then has the base's empty one)."""

    def __init__(self, path: str) -> None:
        self.file = path.rsplit("/", 1)[-1]

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.ClassDef:
        node.body = [s for s in node.body if not (isinstance(s, ast.Assign) and isinstance(s.value, ast.Constant)
                                                  and [ast.unparse(t) for t in s.targets] == ["summary"])] or [ast.Pass()]
        return self.generic_visit(node)

    def pointer(self, node: ast.AST) -> ast.Constant:
        return ast.Constant(f"{self.file}:{node.lineno}")

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        return node if node.name == "_expect" else self.generic_visit(node)  # it raises what it is given

    def visit_Raise(self, node: ast.Raise) -> ast.Raise:
        exc = node.exc
        if isinstance(exc, ast.Call) and (exc.args or exc.keywords) and ast.unparse(exc.func) != "SystemExit":
            exc.args, exc.keywords = [self.pointer(node)], []
        return node

    def visit_Call(self, node: ast.Call) -> ast.Call:
        self.generic_visit(node)
        if isinstance(node.func, ast.Name) and node.func.id == "_expect" and len(node.args) > 1:
            node.args = [node.args[0], self.pointer(node)]
        return node


@dataclass(frozen=True)
class MinifyStyle:
    """How shipped code is minified beyond python-minifier's defaults: ``erase_types`` erases
    dataclass field types (a records script's encoders read their parameters' types, so it
    keeps them); ``pointers`` replaces error messages with pointers to them (an inlined script)."""

    erase_types: bool = True
    pointers: bool = False


ARTIFACT_STYLE = MinifyStyle()
RECORDS_STYLE = MinifyStyle(erase_types=False)
INLINE_STYLE = MinifyStyle(erase_types=False, pointers=True)


def minify(source: str, path: str, style: MinifyStyle = ARTIFACT_STYLE, renames: Mapping[str, str] | None = None) -> str:
    """python-minifier (docstrings dropped, locals renamed), after the edits ``style`` asks for
    and the whole bundle's ``renames`` of module-level names (``rename.py``); from the build
    cache (``cache.py``) when these inputs were minified before by the same code."""
    key = [*_minifier_identity(), path, repr(style), repr(sorted((renames or {}).items())), source]
    out = cached("minify", key, lambda: _minify(source, path, style, renames))
    compile(out, path, "exec")  # a minifier bug must fail the build, not the artifact
    return out


@lru_cache(maxsize=None)
def _minifier_identity() -> tuple[str, ...]:
    """What a minified text depends on besides its inputs: python-minifier's version, Python's
    (``ast.unparse``), and golfpack's own edits (this module and ``rename.py``)."""
    from importlib.metadata import version

    return (version("python-minifier"), sys.version, Path(__file__).read_text(encoding="utf-8"),
            (Path(__file__).parent / "rename.py").read_text(encoding="utf-8"))


def _minify(source: str, path: str, style: MinifyStyle, renames: Mapping[str, str] | None) -> str:
    tree = ast.parse(source)
    if style.erase_types:
        tree = _EraseFieldTypes().visit(tree)
    if style.pointers:
        tree = _PointToMessages(path).visit(tree)
    if renames:
        tree = Renamer(renames).visit(tree)
    edited = ast.unparse(tree) if style.erase_types or style.pointers or renames else source
    return python_minifier.minify(edited, filename=path, remove_literal_statements=True)


def compress_solid(data: bytes) -> tuple[bytes, str]:
    """Raw LZMA2 or brotli, whichever is smaller (ties go to lzma, which needs no package)."""
    import brotli

    xz = lzma.compress(data, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}])
    br = brotli.compress(data, quality=11, lgwin=24)
    return (xz, "lzma") if len(xz) <= len(br) else (br, "brotli")


def build_bundle(decoders: Iterable[DecoderSpec], models: Iterable[str] = (), entries: Iterable[str] = (RUNTIME_ENTRY,),
                 allowed: Callable[[str], bool] = is_shipped, data: dict[str, str] | None = None,
                 style: MinifyStyle = ARTIFACT_STYLE, prefix: bytes = b"",
                 unused: Mapping[str, Container[str]] | None = None, roots: Iterable[str] | None = None,
                 dead: Iterable[str] = ()) -> CodeBundle:
    """The minified, compressed bundle of ``closure(...)``, plus ``data`` files stored as they are;
    ``prefix``: bytes compressed in the same stream before it (an inlined script's loader);
    ``roots``: shake the modules down to what these names reach, less the ``dead`` ones
    (``shake.py``), and give the module-level names nothing else sees short ones (``rename.py``)."""
    found = closure(decoders, models, entries, allowed, unused)
    sources = dict(sorted(found.sources.values()))
    renames = None
    if roots is not None:
        sources = shake(sources, roots, dead)
        renames = global_renames(sources, roots)
    files = {path: minify(src, path, style, renames) for path, src in sources.items()} | (data or {})
    raw = sum(len(src.encode()) for _, src in found.sources.values())
    blob = prefix + pack_bundle(files)
    compressed, codec = compress_solid(blob)
    third = dict(found.third_party)
    if codec == "brotli":
        third["brotli"] = False
    dist = lambda names: tuple(sorted(DISTRIBUTIONS.get(n, n) for n in names))  # noqa: E731
    return CodeBundle(files, raw, len(blob), compressed, codec,
                      dist(n for n, opt in third.items() if not opt), dist(n for n, opt in third.items() if opt))


def inlined(*modules, tail: list[str]) -> str:
    """The sources of ``modules`` (standard-library-only runtime modules) as one script: each
    after the first less its ``__future__`` and relative imports, which the earlier ones
    provide; then the ``tail`` lines."""
    lines: list[str] = []
    for i, module in enumerate(modules):
        own = Path(module.__file__).read_text(encoding="utf-8").splitlines()
        lines += own if i == 0 else [ln for ln in own if not ln.startswith(("from __future__", "from ."))]
    return "\n".join([*lines, *tail, ""])


def excerpt(module, names: Iterable[str]) -> str:
    """``module``'s imports and its top-level definitions of ``names`` (classes, functions,
    constants), in file order: a loader that needs a few of a module's definitions ships those."""
    wanted = set(names)
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))

    def defines(node: ast.stmt) -> set[str]:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            return {node.name}
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            return {t.id for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                    if isinstance(t, ast.Name)}
        return set()

    kept = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)) or defines(n) & wanted]
    missing = wanted - set().union(*map(defines, kept))
    if missing:
        raise BundleError(f"{module.__name__} defines no {', '.join(sorted(missing))}")
    return ast.unparse(ast.Module(kept, []))


def bootstrap_source() -> str:
    """The bootstrap's code: the bundle format and import hook, then the artifact format, inlined;
    then ``runtime/bootstrap.py`` and the call that boots, minified."""
    return minify(inlined(finder_module, artifact_format, bootstrap_module,
                          tail=["sys.exit(boot(os.path.dirname(os.path.abspath(__file__)), sys.argv[1:]))"]),
                  "__main__.py")


def bootstrap_member() -> bytes:
    """``__main__.py`` as stored: a one-line stub that executes the LZMA-compressed, base85-encoded
    bootstrap (stored members are not compressed, and the bootstrap is the one member that must
    be Python source)."""
    packed = base64.b85encode(lzma.compress(bootstrap_source().encode(), format=lzma.FORMAT_ALONE,
                                            preset=9 | lzma.PRESET_EXTREME))
    return b"import base64,lzma;exec(lzma.decompress(base64.b85decode(b'" + packed + b"')))\n"
