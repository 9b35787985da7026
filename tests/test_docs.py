"""The docs name the code as it is: every ``path`` or ``path: name`` a doc puts in backticks
(a file of the tree, and a name that file defines at its top level, or ``Class.member``) exists.
What this cannot check (a bound's value, a default, a claim in prose) is re-read by hand."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TREE = ("api", "codec", "model", "trainer", "packer", "tests", "docs", "bench", ".ci")
REF = re.compile(r"`((?:%s)/[\w./-]+)(?:: ([\w.]+(?:, [\w.]+)*))?`" % "|".join(re.escape(t) for t in TREE))
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])


def top_level_names(tree: ast.Module) -> dict[str, ast.AST]:
    names: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        names[n.id] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = node
    return names


def member_names(cls: ast.ClassDef) -> set[str]:
    """A class's methods, class attributes and the attributes its methods set on ``self``."""
    out = set(top_level_names(ast.Module(body=cls.body, type_ignores=[])))
    for node in ast.walk(cls):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self" \
                and isinstance(node.ctx, ast.Store):
            out.add(node.attr)
    return out


def references() -> list[tuple[str, str, str | None]]:
    found = []
    for doc in DOCS:
        for m in REF.finditer(doc.read_text()):
            path, names = m.group(1).rstrip("."), m.group(2)
            for name in (names.split(", ") if names else [None]):
                found.append((doc.name, path, name))
    return found


REFS = references()


def test_the_docs_name_code():
    assert len(REFS) > 100  # the pattern still finds the docs' references


@pytest.mark.parametrize("doc,path,name", REFS, ids=[f"{d}:{p}:{n}" for d, p, n in REFS])
def test_a_doc_reference_exists(doc, path, name):
    target = ROOT / path
    assert target.exists(), f"{doc} names {path}, which is not in the tree"
    if name is None or target.suffix != ".py":
        return
    head, _, member = name.partition(".")
    names = top_level_names(ast.parse(target.read_text()))
    assert head in names, f"{doc} names {path}: {name}; {path} defines no {head}"
    if member:
        node = names[head]
        assert isinstance(node, ast.ClassDef) and member in member_names(node), \
            f"{doc} names {path}: {name}; {head} has no {member}"
