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
