"""The ship/build line, as the tree draws it: shipped packages never import build-side code,
each stage's encoder and decoder share one name, and pyproject ships every package."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from golfpack.codec.encoders import BUILTIN
from golfpack.codec.stage import Stage, decoder_module
from golfpack.packer.bundle import DECODER_LIBRARIES, SHIPPED_PACKAGES, imports_of, is_decoder_module, is_shipped

from .conftest import ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FOLDERS = {"golfpack.model": ROOT / "model", "golfpack.codec": ROOT / "codec", "golfpack.trainer": ROOT / "trainer",
           "golfpack.packer": ROOT / "packer"}


def modules_under(package: str) -> dict[str, Path]:
    top, _, rest = package.partition(".")
    base = next(folder for name, folder in FOLDERS.items() if package == name or package.startswith(name + "."))
    prefix = next(name for name in FOLDERS if package == name or package.startswith(name + "."))
    root = base / Path(*package[len(prefix) + 1 :].split(".")) if package != prefix else base
    out = {}
    for f in sorted(root.rglob("*.py")):
        parts = list(f.relative_to(base).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join([prefix, *parts])] = f
    return out


def shipped_modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in SHIPPED_PACKAGES:
        found.update(modules_under(package))
    return found


def test_pyproject_lists_every_package_in_the_tree():
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(doc["tool"]["setuptools"]["packages"])
    on_disk = {name for pkg in FOLDERS for name, f in modules_under(pkg).items() if f.name == "__init__.py"}
    assert listed == on_disk | {"golfpack"} and doc["tool"]["setuptools"]["package-dir"]["golfpack"] == "api"
    assert [f.name for f in (ROOT / "api").iterdir() if f.suffix == ".py"] == ["__init__.py"]  # the API is one module


@pytest.mark.parametrize("module", sorted(shipped_modules()))
def test_shipped_code_never_imports_build_side_code(module):
    path = shipped_modules()[module]
    for imp in imports_of(module, path.read_text(), path.name == "__init__.py"):
        if imp.module.startswith("golfpack"):
            assert is_shipped(imp.module), f"{module} imports build-side {imp.module}"
        if is_decoder_module(module):
            top = imp.module.split(".")[0]
            assert top in DECODER_LIBRARIES or top in sys.stdlib_module_names or top in ("golfpack", "__future__"), \
                f"decoder module {module} imports {imp.module}"


def test_parent_packages_of_shipped_code_import_nothing():
    for package in ("golfpack.codec", "golfpack.packer"):
        init = FOLDERS[package] / "__init__.py"
        assert imports_of(package, init.read_text(), True) == [], f"{init} must stay import-free: it ships"


@pytest.mark.parametrize("stage", BUILTIN, ids=lambda s: s.name)
def test_each_stage_finds_its_decoder_under_its_own_name(stage):
    encoder_file = Path(sys.modules[stage.__module__].__file__)
    decoder = stage.decoder()
    decoder_file = Path(importlib.import_module(decoder.module).__file__)
    assert encoder_file.parent.name == "encoders" and decoder_file.parent.name == "decoders"
    assert encoder_file.name == decoder_file.name
    assert callable(importlib.import_module(decoder.module).decode)


def test_every_decoder_module_has_an_encoder_or_is_shared_infrastructure():
    decoders = {p.stem for p in (ROOT / "codec" / "decoders").glob("*.py")} - {"__init__"}
    paired = {Path(sys.modules[s.__module__].__file__).stem for s in BUILTIN}
    assert decoders - paired == {"base", "chain", "config", "container", "counts", "grid"}


def test_a_stage_outside_an_encoders_module_is_refused():
    with pytest.raises(TypeError, match="encoders"):
        type("Loose", (Stage,), {"name": "loose", "consumes": "bytes", "produces": "bytes", "__module__": "mypkg.stuff",
                                 "encode": lambda self, v, c: None})
    assert decoder_module(type("X", (), {"__module__": "pkg.encoders.foo"})) == "pkg.decoders.foo"

