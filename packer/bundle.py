"""The code bundle: the modules an artifact runs, minified and compressed as one solid stream.

What ships: the model, the evaluation and training code, the small runtime, the container
reader and only the decoders of the stages the pipeline uses. Completeness is checked, not
assumed: every ``golfpack`` import at module level in a shipped module must itself ship, and
decoder modules may import only the standard library, numpy, torch, the codec libraries and
``golfpack.codec.decoders.base``.

Bundle format (before compression): ``path NUL source NUL path NUL source ...`` with paths like
``golfpack/model/gpt.py``; packages are the paths ending in ``__init__.py``.
"""
from __future__ import annotations

import ast
import importlib.util
import lzma
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import python_minifier

from ..codec.decode import DecoderSpec

# Modules every artifact runs, besides the decoders of its stages.
CORE_MODULES = (
    "golfpack", "golfpack.model", "golfpack.model.config", "golfpack.model.gpt", "golfpack.model.shards",
    "golfpack.model.scoring", "golfpack.model.evaluate", "golfpack.model.distributed", "golfpack.model.checkpoint",
    "golfpack.codec", "golfpack.codec.container", "golfpack.codec.decode", "golfpack.codec.decoders",
    "golfpack.codec.decoders.base", "golfpack.codec.decoders.bytecoders", "golfpack.codec.decoders.intq",
    "golfpack.codec.quant",
    "golfpack.trainer", "golfpack.trainer.config", "golfpack.trainer.train", "golfpack.trainer.data",
    "golfpack.trainer.muon", "golfpack.trainer.schedule", "golfpack.trainer.qat", "golfpack.trainer.calibrate",
    "golfpack.packer", "golfpack.packer.runtime",
)
DECODER_ALLOWED_IMPORTS = {"numpy", "torch", "constriction", "zstandard", "brotli", "__future__",
                           "golfpack", "golfpack.codec", "golfpack.codec.decoders", "golfpack.codec.decoders.base",
                           *sys.stdlib_module_names}
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


def module_path(name: str) -> tuple[str, str]:
    """``(path inside the bundle, source)`` of an importable module."""
    if name == "golfpack":
        return "golfpack/__init__.py", NAMESPACE_INIT
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        raise BundleError(f"cannot find the source of module '{name}'")
    is_pkg = spec.submodule_search_locations is not None
    rel = name.replace(".", "/") + ("/__init__.py" if is_pkg else ".py")
    return rel, Path(spec.origin).read_text(encoding="utf-8")


def _imports(name: str, source: str, is_pkg: bool) -> set[str]:
    """Absolute names of modules imported at module level (function-level imports are lazy)."""
    found: set[str] = set()
    package = name if is_pkg else name.rpartition(".")[0]
    for node in ast.parse(source).body:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            # `from pkg import sub` imports a module too when `sub` is one
            found.update(f"{mod}.{a.name}" for a in node.names if _is_module(mod) and _is_module(f"{mod}.{a.name}"))
    return found


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def select_modules(decoders: Iterable[DecoderSpec]) -> list[str]:
    names = set(CORE_MODULES)
    for spec in decoders:
        module = spec.target.partition(":")[0]
        parts = module.split(".")
        names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return sorted(names)


def check_imports(sources: dict[str, tuple[str, bool]], decoder_modules: set[str]) -> None:
    shipped = set(sources)
    for name, (source, is_pkg) in sources.items():
        for imp in _imports(name, source, is_pkg):
            top = imp.split(".")[0]
            if imp.startswith("golfpack") and imp not in shipped and _is_module(imp):
                raise BundleError(f"shipped module '{name}' imports '{imp}', which would not ship")
            allowed = imp in DECODER_ALLOWED_IMPORTS or (top in DECODER_ALLOWED_IMPORTS and top != "golfpack")
            if name in decoder_modules and not allowed:
                raise BundleError(f"decoder module '{name}' imports '{imp}'; decoders may import only the standard "
                                  "library, numpy, torch, the codec libraries and golfpack.codec.decoders.base")


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


def minify(source: str, path: str) -> str:
    """python-minifier (docstrings dropped, locals renamed) after erasing field types."""
    erased = ast.unparse(_EraseFieldTypes().visit(ast.parse(source)))
    out = python_minifier.minify(erased, filename=path, remove_literal_statements=True)
    compile(out, path, "exec")  # a minifier bug must fail the build, not the artifact
    return out


def compress_solid(data: bytes) -> tuple[bytes, str]:
    """Raw LZMA2 or brotli, whichever is smaller (ties go to lzma)."""
    import brotli

    xz = lzma.compress(data, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}])
    br = brotli.compress(data, quality=11, lgwin=24)
    return (xz, "lzma") if len(xz) <= len(br) else (br, "brotli")


def build_bundle(decoders: Iterable[DecoderSpec]) -> CodeBundle:
    decoders = list(decoders)
    sources: dict[str, tuple[str, bool]] = {}
    paths: dict[str, str] = {}
    for name in select_modules(decoders):
        path, source = module_path(name)
        sources[name] = (source, path.endswith("__init__.py"))
        paths[name] = path
    check_imports(sources, {d.target.partition(":")[0] for d in decoders})
    files = {paths[n]: minify(src, paths[n]) for n, (src, _) in sorted(sources.items())}
    raw = sum(len(src.encode()) for src, _ in sources.values())
    blob = b"\0".join(part for p, s in files.items() for part in (p.encode(), s.encode()))
    compressed, codec = compress_solid(blob)
    return CodeBundle(files, raw, len(blob), compressed, codec)
