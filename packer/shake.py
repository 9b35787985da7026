"""Tree shaking: an inlined script ships only the top-level definitions something can reach.

golfpack's modules are written for every caller (the CLI, the benches, the records path); an
inlined script calls a few API functions and decodes one pipeline's stages, so most modules
carry definitions it never reaches (a decoder module's writer half, a helper only the ledger
uses). Every byte of code is a byte less for weights, so :func:`shake` drops them.

The analysis is by *name*, deliberately coarse so that it can only keep too much: a name
referenced anywhere in kept code (as a name, an attribute or a string constant, which covers
``getattr(module, "decode")``) keeps every top-level definition of that name in every module.
What is dropped: functions, classes and assignments (without calls) whose names nothing kept
references, and the module-level ``from x import name`` aliases that bound them. Dunder names,
statements that define nothing (``if TYPE_CHECKING:``, ``try``) and imports inside functions
are always kept.
"""
from __future__ import annotations

import ast
from typing import Iterable, Mapping


def _defined(node: ast.stmt) -> set[str]:
    """The names a top-level statement defines, when dropping it cannot run or skip code
    (an assignment whose value calls nothing); empty for any other statement (always kept)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None \
            and not any(isinstance(n, ast.Call) for n in ast.walk(node.value)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        if all(isinstance(t, ast.Name) for t in targets):
            return {t.id for t in targets}
    return set()


def _references(node: ast.AST) -> set[str]:
    """Names, attributes and string constants in ``node``, less function signatures' annotations
    (erased by the minifier, never evaluated); a nested ``from x import a`` references ``a``."""
    skip = set()
    for n in ast.walk(node):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            skip.update(id(a.annotation) for a in [*n.args.posonlyargs, *n.args.args, *n.args.kwonlyargs,
                                                    n.args.vararg, n.args.kwarg] if a is not None and a.annotation)
            if n.returns is not None:
                skip.add(id(n.returns))
    out: set[str] = set()
    todo = [node]
    while todo:
        n = todo.pop()
        if id(n) in skip:
            continue
        if isinstance(n, ast.Name):
            out.add(n.id)
        elif isinstance(n, ast.Attribute):
            out.add(n.attr)
        elif isinstance(n, ast.Constant) and isinstance(n.value, str):
            out.add(n.value)
        elif isinstance(n, ast.alias):
            out.add(n.name)
        todo.extend(ast.iter_child_nodes(n))
    return out


def _bound(alias: ast.alias) -> str:
    return alias.asname or alias.name


def _lines(tree: ast.Module) -> list[tuple[int, int] | None]:
    """Each top-level statement's lines (decorators included), or None where it shares a line
    with another statement: blanking lines could not drop it alone, so it is kept."""
    spans = [(min([n.lineno, *(d.lineno for d in getattr(n, "decorator_list", ()))]), n.end_lineno) for n in tree.body]
    return [None if any(j != i and a <= last and first <= b for j, (a, b) in enumerate(spans)) else (first, last)
            for i, (first, last) in enumerate(spans)]


def _needed(node: ast.stmt, keep: set[str]) -> bool:
    names = _defined(node)
    return not names or bool(names & keep) or any(n.startswith("__") for n in names)


def shake(sources: Mapping[str, str], roots: Iterable[str], dead: Iterable[str] = ()) -> dict[str, str]:
    """``path -> source`` less what neither ``roots`` (names the caller reaches: the script's,
    the stages', the decoders' entry points) nor anything kept references. ``dead``: names the
    caller knows are never called though kept code names them (the API's fill, under a packed
    pipeline that does not fill): never kept, so their definitions and imports go, and what only
    they referenced."""
    trees = {path: ast.parse(src) for path, src in sources.items()}
    lines = {path: _lines(tree) for path, tree in trees.items()}
    dead = set(dead)
    keep = set(roots) - dead
    reached: set[int] = set()  # statements whose references are in ``keep`` already (each walked once)
    while True:
        before = len(keep)
        for path, tree in trees.items():
            for node, span in zip(tree.body, lines[path]):
                if isinstance(node, ast.ImportFrom) and span is not None:  # keeping b keeps x's a
                    keep.update(a.name for a in node.names if _bound(a) in keep and a.name not in dead)
                elif id(node) not in reached and (span is None or _needed(node, keep)):
                    reached.add(id(node))
                    keep |= _references(node) - dead
        if len(keep) == before:
            break
    return {path: _edited(sources[path], tree, lines[path], keep) for path, tree in trees.items()}


def _edited(source: str, tree: ast.Module, spans: list[tuple[int, int] | None], keep: set[str]) -> str:
    """``source`` with the dropped statements' lines blanked and pruned imports re-spelled on
    their first line: every kept line stays where it was, so an error's pointer
    (``bundle.py: _PointToMessages``) names golfpack's own line."""
    lines = source.split("\n")
    for node, span in zip(tree.body, spans):
        if span is None:
            continue
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            names = [a for a in node.names if _bound(a) in keep or a.name == "*"]
            if len(names) == len(node.names):
                continue
            replacement = [ast.unparse(ast.ImportFrom(node.module, names, node.level))] if names else []
        elif _needed(node, keep):
            continue
        else:
            replacement = []
        first, last = span
        lines[first - 1 : last] = replacement + [""] * (last - first + 1 - len(replacement))
    return "\n".join(lines)
