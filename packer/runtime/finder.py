"""The import hook that runs a code bundle (bundle path -> source), and nothing else.

Standard library only and import-free of golfpack: its source is inlined into every artifact's
``__main__.py`` (after ``artifact.py``) and every records script's ``train_gpt.py``, before any
of the bundle's code exists. Once first on ``sys.meta_path`` it makes the bundle's own code
win over any golfpack installed where the bundle runs.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

ORIGIN = "artifact:"


def module_file(module: str, files: dict) -> str | None:
    """The bundle path that provides ``module`` (a package's ``__init__.py`` or a module file)."""
    base = module.replace(".", "/")
    return next((f for f in (base + "/__init__.py", base + ".py") if f in files), None)


class BundleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports modules from the bundle's sources, and nothing else."""

    def __init__(self, files: dict) -> None:
        self.files = files

    def find_spec(self, name, path=None, target=None):
        f = module_file(name, self.files)
        if f is not None:
            return importlib.util.spec_from_loader(name, self, origin=ORIGIN + f, is_package=f.endswith("/__init__.py"))
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        origin = module.__spec__.origin
        exec(compile(self.files[origin[len(ORIGIN):]], origin, "exec"), module.__dict__)


def run_bundle(files: dict, entry: str, *args):
    """Put the bundle first on ``sys.meta_path`` and call ``main(*args)`` of its module ``entry``."""
    sys.meta_path.insert(0, BundleFinder(files))
    return importlib.import_module(entry).main(*args)
