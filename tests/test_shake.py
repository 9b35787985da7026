"""An inlined script's code: shaken down to what it reaches, its errors pointing at their messages."""
import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from golfpack.packer.bundle import INLINE_STYLE, minify
from golfpack.packer.shake import shake

ROOT = Path(__file__).resolve().parents[1]

A = '''\
from .b import used, unused as gone
import json

LIMIT = 4
TABLE = {"k": LIMIT}
COMPUTED = json.dumps([1])  # a call: kept, it could matter


def entry(x):
    from .b import lazy_one  # nested imports stay whole
    return used(x) + TABLE["k"]


def dead(x):
    return gone(x)


def by_string(m):
    return getattr(m, "named_in_a_string")


class Kept:
    def method(self):
        return helper()


def helper():
    return 1


def __getattr__(name):
    return name
'''
B = '''\
def used(x: "dead") -> "dead":
    return x


def unused(x):
    return x


def lazy_one():
    return 0


def named_in_a_string():
    return 2
'''


def names(src: str) -> list[str]:
    out = []
    for n in ast.parse(src).body:
        if isinstance(n, ast.ImportFrom):
            out.append("from " + ",".join(a.asname or a.name for a in n.names))
        elif isinstance(n, (ast.FunctionDef, ast.ClassDef)):
            out.append(n.name)
        elif isinstance(n, ast.Assign):
            out.append(ast.unparse(n.targets[0]))
        elif isinstance(n, ast.Import):
            out.append("import")
    return out


def test_shake_keeps_what_the_roots_reach_and_drops_the_rest():
    out = shake({"p/a.py": A, "p/b.py": B}, roots={"entry", "Kept", "by_string"})
    assert names(out["p/a.py"]) == ["from used", "import", "LIMIT", "TABLE", "COMPUTED", "entry", "by_string",
                                    "Kept", "helper", "__getattr__"]
    # `dead` only in annotations keeps nothing; `unused` went with the alias that bound it
    assert names(out["p/b.py"]) == ["used", "lazy_one", "named_in_a_string"]


def test_dead_names_go_with_their_imports_and_what_only_they_reach():
    """``entry`` names ``used``, but the caller knows it is never called: its definition, the
    import that binds it, and everything only it reached go; the rest is shaken as before."""
    out = shake({"p/a.py": A, "p/b.py": B}, roots={"entry", "Kept", "by_string"}, dead={"used"})
    assert names(out["p/a.py"]) == ["import", "LIMIT", "TABLE", "COMPUTED", "entry", "by_string", "Kept", "helper",
                                    "__getattr__"]
    assert names(out["p/b.py"]) == ["lazy_one", "named_in_a_string"]


def test_shake_leaves_a_module_with_nothing_to_drop_byte_for_byte():
    src = "from .b import used\n\n\ndef entry(x):\n    return used(x)\n"
    assert shake({"p/a.py": src}, roots={"entry"})["p/a.py"] == src


def test_shake_without_roots_in_reach_keeps_only_statements_that_define_nothing():
    out = shake({"p/a.py": A, "p/b.py": B}, roots=set())
    assert names(out["p/a.py"]) == ["import", "COMPUTED", "__getattr__"]


def test_pointers_replace_messages_and_keep_what_else_a_raise_carries():
    src = textwrap.dedent('''\
        import sys
        class Bad(ValueError):
            pass
        def f(x):
            if x:
                raise Bad(f"x was {x}, far too much")
            raise SystemExit("usage: f")
        def _expect(cond, *message):
            if not cond:
                raise Bad(": ".join(message))
        def g(v):
            _expect(v > 0, "where", f"what {v}")
            raise Bad from None
        ''')
    out = minify(src, "pkg/mod.py", INLINE_STYLE)
    assert "far too much" not in out and "'mod.py:6'" in out  # the line that spells the message
    assert "usage: f" in out  # SystemExit's argument is what it prints or exits with
    assert "what" not in out and "'mod.py:12'" in out and "join" in out  # _expect passes the pointer through
    scope = {}
    exec(compile(out, "mod.py", "exec"), scope)
    with pytest.raises(ValueError, match="^mod.py:6$"):
        scope["f"](1)
    with pytest.raises(ValueError, match="^mod.py:12$"):
        scope["g"](0)


def test_an_inlined_decoder_refuses_with_a_pointer_to_golfpacks_own_message(tmp_path):
    """The packed container reader, run where golfpack is not importable, still refuses a bad
    file, and its pointer names the line of golfpack's source that holds the message."""
    from golfpack.codec.encoders.intq import RTN
    from golfpack.packer.bundle import build_bundle, ships_in_records
    from golfpack.packer.inline import DECODE_ENTRY, DECODE_ROOTS
    from golfpack.packer.runtime.finder import pack_bundle

    d = build_bundle([RTN.decoder()], entries=[DECODE_ENTRY], allowed=ships_in_records, style=INLINE_STYLE,
                     roots=DECODE_ROOTS)
    (tmp_path / "bundle").write_bytes(pack_bundle(d.files))
    probe = textwrap.dedent(f'''\
        import sys
        sys.path[:] = [p for p in sys.path if "site-packages" not in p and p != {str(ROOT.parent)!r}]
        from golfpack_runtime_finder import install
        install(open("bundle", "rb").read())
        from golfpack.codec.decoders.container import read_container, ContainerError
        try:
            read_container(b"GPAK" + bytes(12))
        except ContainerError as e:
            print(e)
        ''')
    (tmp_path / "golfpack_runtime_finder.py").write_text((ROOT / "packer" / "runtime" / "finder.py").read_text())
    (tmp_path / "probe.py").write_text(probe)
    r = subprocess.run([sys.executable, "-S", "probe.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    file, line = r.stdout.strip().split(":")
    assert file == "container.py"
    spelled = (ROOT / "codec" / "decoders" / "container.py").read_text().splitlines()[int(line) - 1]
    assert "truncated" in spelled


def test_a_statement_sharing_a_line_is_kept_with_what_it_references():
    src = "from .b import used\n\n\ndef helper():\n    return used()\nX = 1; Y = helper\n"
    out = shake({"p/a.py": src, "p/b.py": B}, roots=set())
    assert out["p/a.py"] == src and "def used" in out["p/b.py"]


def test_global_renames_shorten_only_what_nothing_sees_by_spelling():
    from golfpack.packer.rename import global_renames

    a = textwrap.dedent('''\
        from torch import nn
        from .b import shared_helper, KeptError
        LONG_CONSTANT = 3
        def by_attribute():
            return 0
        def by_keyword():
            return 0
        def by_string():
            return 0
        def root_name():
            return shared_helper(LONG_CONSTANT, dict(by_keyword=1)) + nn.by_attribute + getattr(nn, "by_string")
        def param_name(param_name):
            try:
                return param_name
            except KeptError as caught:
                return caught
        def caught():
            return 0
        ''')
    b = "class KeptError(ValueError):\n    pass\n\n\ndef shared_helper(x, y):\n    return x\n\n\nlen = 1\n"
    table = global_renames({"p/a.py": a, "p/b.py": b}, keep={"root_name"})
    assert set(table) == {"LONG_CONSTANT", "shared_helper"}  # the rest is seen by spelling (or is a builtin)
    assert len(set(table.values())) == 2 and all(v.startswith("g") and len(v) == 2 for v in table.values())
    renamed = {p: minify(s, p, renames=table) for p, s in {"p/a.py": a, "p/b.py": b}.items()}
    assert "shared_helper" not in renamed["p/a.py"] + renamed["p/b.py"]
    assert table["shared_helper"] in renamed["p/a.py"] and f"def {table['shared_helper']}(" in renamed["p/b.py"]
    assert global_renames({"p/a.py": a, "p/b.py": b}, keep={"root_name"}) == table  # deterministic


def test_an_inlined_package_runs_after_shaking_and_renaming(tmp_path):
    """Two modules importing each other's definitions, shaken, renamed and minified as inline
    packs them, import and give what the originals give."""
    from golfpack.packer.rename import global_renames

    pkg = {"golfpack_probe/__init__.py": "from .api import public\n",
           "golfpack_probe/api.py": "from .core import COUNT_LIMIT, combine, unused_thing\n\n\n"
                                    "def public(x):\n    if x > COUNT_LIMIT:\n        raise ValueError(f'{x} over')\n"
                                    "    return combine(x, x)\n",
           "golfpack_probe/core.py": "COUNT_LIMIT = 10\n\n\ndef combine(a, b):\n    return helper_sum(a, b)\n\n\n"
                                     "def helper_sum(a, b):\n    return a + b\n\n\ndef unused_thing():\n    return 1\n"}
    shaken = shake(pkg, {"public"})
    table = global_renames(shaken, {"public"})
    assert {"combine", "helper_sum", "COUNT_LIMIT"} <= set(table) and "unused_thing" not in shaken["golfpack_probe/core.py"]
    for path, src in shaken.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(minify(src, path, INLINE_STYLE, table))
    probe = "import golfpack_probe\nprint(golfpack_probe.public(4))\ntry:\n    golfpack_probe.public(11)\n" \
            "except ValueError as e:\n    print(e)\n"
    r = subprocess.run([sys.executable, "-S", "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["8", "api.py:6"]
