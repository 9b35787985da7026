"""The challenge's own ``train_gpt.py`` with golfpack's export in place of its int8 + zlib one:
the diff docs/own-script.md walks through, applied by program so a GPU run uses exactly it.

    python bench/own_script.py PATH/train_gpt.py OUT.py

``PATH``: the challenge's baseline script (openai/parameter-golf, ``train_gpt.py``; golfpack
ships none of it). Four edits, each found by the script's syntax tree or a marker line, and
refused if it is not there (another version of the script): ``import hashlib`` and ``import
golfpack`` beside ``import zlib``; the wall-clock cap less ``CALIB_RESERVE_SECONDS`` (default
12), because the calibration reads training data and must end inside the 600 s; the int8
quantizer's five functions removed; the block from "SERIALIZATION + ROUNDTRIP VALIDATION" to
the process group's teardown replaced by :data:`EXPORT`. Then ``golfpack inline OUT.py --out
FOLDER`` makes the records script (bench/gpu_own_script.sh).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

INT8_FUNCTIONS = ("tensor_nbytes", "keep_float_tensor", "quantize_float_tensor", "quantize_state_dict_int8",
                  "dequantize_state_dict_int8")
WALLCLOCK = 'max_wallclock_seconds = float(os.environ.get("MAX_WALLCLOCK_SECONDS", 600.0))'
RESERVED = WALLCLOCK[:-1] + ' - float(os.environ.get("CALIB_RESERVE_SECONDS", 12.0)))'
SECTION = "# SERIALIZATION + ROUNDTRIP VALIDATION"
TEARDOWN = "    if distributed:\n        dist.destroy_process_group()\n"
EXPORT = '''    # SERIALIZATION + ROUNDTRIP VALIDATION, by golfpack: calibrate on the run's own training batches
    # (inside the wall clock: see CALIB_RESERVE_SECONDS), fill the bytes left after this script, decode
    # the model file from disk and score it.
    model_path = f"final_model_seed{args.seed}.gpak"
    if master_process:
        batches = iter(lambda: train_loader.next_batch(args.train_batch_tokens, args.train_seq_len, grad_accum_steps), None)
        calib = golfpack.calibrate(base_model, batches, hessian_tokens=262_144, sensitivity_tokens=32_768,
                                   score_tokens=32_768)
        log0(f"calibration: {calib.tokens} training tokens in {calib.seconds:.1f}s")
        blob = golfpack.compress(base_model, calib, golfpack.budget(), log=log0)
        with open(model_path, "wb") as f:
            f.write(blob)
        code_bytes = os.path.getsize(__file__)
        log0(f"Serialized model golfpack: {len(blob)} bytes ({model_path} sha256:{hashlib.sha256(blob).hexdigest()})")
        log0(f"Code size: {code_bytes} bytes")
        log0(f"Total submission size golfpack: {len(blob) + code_bytes} bytes")
    if distributed:
        dist.barrier()
    golfpack.decompress(model_path, base_model)
    torch.cuda.synchronize()
    t_qeval = time.perf_counter()
    q_val_loss, q_val_bpb = eval_val(args, model, rank, world_size, device, grad_accum_steps, val_tokens,
                                     base_bytes_lut, has_leading_space_lut, is_boundary_token_lut)
    torch.cuda.synchronize()
    log0(f"final_golfpack_roundtrip val_loss:{q_val_loss:.4f} val_bpb:{q_val_bpb:.4f} "
         f"eval_time:{1000.0 * (time.perf_counter() - t_qeval):.0f}ms")
    log0(f"final_golfpack_roundtrip_exact val_loss:{q_val_loss:.8f} val_bpb:{q_val_bpb:.8f}")

'''


def patch(text: str) -> str:
    lines = text.splitlines(keepends=True)
    defs = {n.name: n for n in ast.parse(text).body if isinstance(n, ast.FunctionDef)}
    missing = [n for n in INT8_FUNCTIONS if n not in defs]
    if missing or text.count(WALLCLOCK) != 1 or text.count(SECTION) != 1 or "import zlib\n" not in text:
        raise SystemExit(f"not the challenge's baseline train_gpt.py (missing: {missing or 'a marker line'})")
    start = next(i for i, ln in enumerate(lines) if SECTION in ln) - 1  # the "# ----" rule above the title
    end = "".join(lines).rindex(TEARDOWN)
    end_line = "".join(lines)[:end].count("\n")
    lines[start:end_line] = [EXPORT]
    for name in sorted(INT8_FUNCTIONS, key=lambda n: -defs[n].lineno):  # bottom up: earlier line numbers hold
        node = defs[name]
        del lines[node.lineno - 1 : node.end_lineno]
    out = "".join(lines).replace("import zlib\n", "import hashlib\n", 1).replace(WALLCLOCK, RESERVED, 1)
    out = out.replace("import numpy as np\n", "import golfpack\nimport numpy as np\n", 1)
    ast.parse(out)
    return out


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    if dst.exists():
        raise SystemExit(f"{dst} exists")
    dst.write_text(patch(src.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
