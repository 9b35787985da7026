"""Short names for an inlined script's module-level definitions, across the whole bundle.

python-minifier renames what is local to a function; the names of functions, classes and
constants a module defines stay long because other modules import them (``read_container``,
``MAX_DECODE_STEPS``). Renamed the same way in every module at once, they lose about a twentieth
of the compressed code. Like ``shake.py`` the analysis is by name and can only rename too
little: an identifier is renamed everywhere it is a name, and only when nothing can see it by
its spelling. Kept: every name the caller keeps (the script's names, the stage classes), and
any identifier that appears as an attribute, a keyword argument, a parameter, a class-level
name, a string, an ``except ... as`` target, a third-party import's name, a builtin, a dunder
or an error class (``...Error``, which a traceback shows).
"""
from __future__ import annotations

import ast
import builtins
import itertools
import keyword
from typing import Iterable, Mapping

PREFIX = "g"  # new names: g + letters, none of them an identifier the bundle already uses


def _module_level_names(tree: ast.Module) -> set[str]:
    out = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out.update(t.id for t in targets if isinstance(t, ast.Name))
    return out


def _seen_by_spelling(tree: ast.Module) -> set[str]:
    """Identifiers something can reach by their spelling rather than by a name in scope."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            out.add(node.attr)
        elif isinstance(node, ast.keyword) and node.arg:
            out.add(node.arg)
        elif isinstance(node, ast.arg):
            out.add(node.arg)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.add(node.value)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            out.add(node.name)
        elif isinstance(node, ast.ClassDef):
            out |= _module_level_names(ast.Module(node.body, []))
        elif isinstance(node, ast.Import):
            out.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and not (node.module or "").startswith("golfpack"):
            out.update(a.asname or a.name for a in node.names)
    return out


def global_renames(sources: Mapping[str, str], keep: Iterable[str]) -> dict[str, str]:
    """``old -> new`` for the module-level names of ``sources`` that nothing sees by spelling,
    in sorted order, so the same sources and ``keep`` always give the same names."""
    trees = [ast.parse(src) for src in sources.values()]
    defined = set().union(*map(_module_level_names, trees))
    blocked = set(keep) | set(dir(builtins)) | set().union(*map(_seen_by_spelling, trees))
    names = sorted(n for n in defined - blocked if not n.startswith("__") and not n.endswith("Error") and len(n) > 2)
    taken = {n.id for t in trees for n in ast.walk(t) if isinstance(n, ast.Name)} | blocked | defined
    fresh = (PREFIX + "".join(letters) for k in itertools.count(1)
             for letters in itertools.product("abcdefghijklmnopqrstuvwxyz", repeat=k))
    free = (n for n in fresh if n not in taken and not keyword.iskeyword(n))
    return dict(zip(names, free))


class Renamer(ast.NodeTransformer):
    """Applies :func:`global_renames`' table to one module: its names and definitions (a method's
    name is class-level, so never in the table), ``global``/``nonlocal`` statements and the names
    its golfpack imports bind."""

    def __init__(self, table: Mapping[str, str]) -> None:
        self.table = table

    def visit_Name(self, node: ast.Name) -> ast.Name:
        node.id = self.table.get(node.id, node.id)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        node.name = self.table.get(node.name, node.name)
        self.generic_visit(node)
        return node

    visit_AsyncFunctionDef = visit_ClassDef = visit_FunctionDef

    def visit_Global(self, node: ast.Global) -> ast.Global:
        node.names = [self.table.get(n, n) for n in node.names]
        return node

    visit_Nonlocal = visit_Global

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.ImportFrom:
        if node.level or (node.module or "").startswith("golfpack"):
            for a in node.names:
                a.name = self.table.get(a.name, a.name)
                a.asname = a.asname and self.table.get(a.asname, a.asname)
        return node
