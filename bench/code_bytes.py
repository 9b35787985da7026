"""What golfpack's codec costs in code bytes inside a participant's script, against the #1
record's own export measured the same way.

    python bench/code_bytes.py --record PATH/train_gpt.py [--script tests/participant/train_gpt.py]

``--record``: the #1 record's ``train_gpt.py`` (openai/parameter-golf,
``records/track_10min_16mb/2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611``;
golfpack ships none of it). Its export is the functions from ``collect_hessians`` to
``deserialize`` (GPTQ, LQER, the int8 gate, per-group lrzip, serialize and deserialize: 686
source lines), its decode path the functions ``deserialize`` calls. Both are packed as an
inlined script packs golfpack: minified by python-minifier, compressed by the smaller of raw
LZMA2 and brotli-11, written as a Latin-1 literal. golfpack's figures are ``golfpack inline``'s
own ledger for ``--script`` (encode and decode path: what golfpack adds to the script).
"""
from __future__ import annotations

import argparse
import ast
import tempfile
from pathlib import Path

from golfpack.packer.bundle import INLINE_STYLE, compress_solid, minify
from golfpack.packer.inline import inline
from golfpack.packer.records.layout import latin1_literal

ROOT = Path(__file__).resolve().parents[1]
EXPORT = ("collect_hessians", "deserialize")  # first and last function of the record's export, in file order
DECODE = ("dequantize_mixed", "_lrzip_decompress", "_unpack_streams", "_decompress", "_deserialize_pergroup",
          "_rebank_state_dict", "deserialize")


def packed(source: str) -> int:
    """Bytes of ``source`` as an inlined script carries code: minified, compressed, a Latin-1 literal."""
    return len(latin1_literal(compress_solid(minify(source, "export.py", INLINE_STYLE).encode())[0]))


def record_parts(path: Path) -> tuple[str, str, int]:
    """The record's export source, its decode path's source, and the export's line count."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    defs = {n.name: n for n in ast.parse(text).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    missing = [n for n in (*EXPORT, *DECODE) if n not in defs]
    if missing:
        raise SystemExit(f"{path}: not the #1 record's script (no {', '.join(missing)})")
    first, last = defs[EXPORT[0]], defs[EXPORT[1]]
    export = "".join(lines[first.lineno - 1 : last.end_lineno])
    decode = "".join("".join(lines[defs[n].lineno - 1 : defs[n].end_lineno]) for n in DECODE)
    return export, decode, last.end_lineno - first.lineno + 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--record", type=Path, required=True)
    ap.add_argument("--script", type=Path, default=ROOT / "tests" / "participant" / "train_gpt.py")
    ap.add_argument("--pipeline", default="default")
    args = ap.parse_args()
    export, decode, n_lines = record_parts(args.record)
    rec_all, rec_decode = packed(export), packed(decode)
    with tempfile.TemporaryDirectory() as tmp:
        r = inline(args.script, Path(tmp) / "rec", args.pipeline)
    print(f"code bytes, packed the same way (minified, lzma/brotli, Latin-1 literal); golfpack {args.pipeline} pipeline")
    print(f"{'':34} {'encode + decode':>16} {'decode only':>12}")
    print(f"{'#1 record export (' + str(n_lines) + ' lines)':34} {rec_all:>16,} {rec_decode:>12,}")
    print(f"{'golfpack inline (added to script)':34} {r.golfpack_bytes:>16,} {r.decode_bytes:>12,}")
    print(f"{'golfpack / record':34} {r.golfpack_bytes / rec_all:>16.2f}x {r.decode_bytes / rec_decode:>11.2f}x")
    print(f"{'targets (issue 35)':34} {16_000:>16,} {6_000:>12,}")


if __name__ == "__main__":
    main()
