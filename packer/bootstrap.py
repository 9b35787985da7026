"""The artifact's ``__main__.py``: verify every member's hash, unpack the code bundle into an
import hook, hand over to ``golfpack.packer.runtime``. Kept tiny; minified when packed.

The minifier writes the syntax of the Python that builds (3.12's f-strings, for one), so an
artifact records that version and refuses older interpreters with a clear message.

The hook goes first on ``sys.meta_path``, so an artifact runs its own code even where some
golfpack is installed.
"""

BOOTSTRAP = r'''
import hashlib, importlib.abc, importlib.util, json, os, sys, zipfile


def fail(msg):
    sys.exit("golfpack artifact: " + msg)


def read(z, name):
    try:
        return z.read(name)
    except Exception as e:  # CRC errors, truncation
        fail(name + " is corrupted (" + str(e) + ")")


def unpack():
    z = zipfile.ZipFile(os.path.dirname(os.path.abspath(__file__)))
    raw = read(z, "manifest.json")
    if z.comment != b"golfpack-sha256:" + hashlib.sha256(raw).hexdigest().encode():
        fail("manifest hash mismatch (corrupted or tampered)")
    m = json.loads(raw)
    need = tuple(m["python"])
    if sys.version_info[:2] < need:
        fail("built with Python %d.%d, whose code this Python %d.%d may not parse" % (need + sys.version_info[:2]))
    for name, digest in m["sha256"].items():
        if hashlib.sha256(read(z, name)).hexdigest() != digest:
            fail(name + " hash mismatch (corrupted or tampered)")
    code = read(z, m["code"]["member"])
    if m["code"]["codec"] == "lzma":
        import lzma
        code = lzma.decompress(code, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
    else:
        import brotli
        code = brotli.decompress(code)
    parts = code.split(b"\0")
    return z, m, {parts[i].decode(): parts[i + 1].decode() for i in range(0, len(parts), 2)}


class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, files):
        self.files = files

    def find_spec(self, name, path=None, target=None):
        base = name.replace(".", "/")
        for f, pkg in ((base + "/__init__.py", True), (base + ".py", False)):
            if f in self.files:
                return importlib.util.spec_from_loader(name, self, origin="artifact:" + f, is_package=pkg)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        origin = module.__spec__.origin
        exec(compile(self.files[origin[9:]], origin, "exec"), module.__dict__)


z, m, files = unpack()
sys.meta_path.insert(0, Finder(files))
from golfpack.packer.runtime import main
sys.exit(main(sys.argv[1:], z, m))
'''
