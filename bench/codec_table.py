"""Codec benchmark on a golfpack-trained model (the codec issue's acceptance table).

1. The same integer symbols of every block matrix, coded by ANS and by zstd-22 / brotli-11 /
   lzma-9 over the packed int8 bytes, against their order-0 entropy: bytes, bits per
   parameter, ratio to the entropy bound (ANS counted with its table).
2. GPTQ against round-to-nearest at the same bit width: val_bpb after the quantization round
   trip, side by side with the float model.

    python bench/codec_table.py runs/demo/final.pt --val VAL_GLOB --tokenizer SP.model [--bits 6]
"""
from __future__ import annotations

import argparse
import fnmatch


from golfpack.codec.decoders.container import read_container
from golfpack.codec.entropy import order0_bits
from golfpack.codec.host import decode_state_dict, ledger, symbols_of
from golfpack.codec.pipeline import encode_state_dict
from golfpack.codec.registry import decoder_table
from golfpack.codec.spec import load_spec
from golfpack.model.checkpoint import load_checkpoint
from golfpack.model.eval_settings import EvalSettings
from golfpack.model.evaluate import evaluate_files
from golfpack.model.config import GPTConfig
from golfpack.model.gpt import GPT
from golfpack.trainer.calibration_files import load_hessians

MATRICES = "blocks.*.attn.c_*.weight blocks.*.attn.proj.weight blocks.*.mlp.*.weight".split()


def coder_table(state: dict, bits: int, clip: str) -> None:
    matrices = {k: v for k, v in state.items() if any(fnmatch.fnmatchcase(k, p) for p in MATRICES)}
    params = sum(v.numel() for v in matrices.values())
    table = decoder_table()
    entropy_bits = 0.0
    rows = []
    for coder in ["ans", "pack -> zstd level=22", "pack -> brotli level=11", "pack -> lzma level=9"]:
        data = encode_state_dict(matrices, load_spec(f"*=rtn bits={bits} clip={clip} -> {coder}"))
        c = read_container(data)
        led = ledger(c, table)
        scales = sum(r.blobs["scales"].length for e in c.entries for r in e.chain if "scales" in r.blobs)
        coded = sum(t.bytes for t in led) - scales  # symbols only, coder side info (ANS table) included
        if coder == "ans":
            entropy_bits = sum(order0_bits(symbols_of(c, e, table)) for e in c.entries)
        rows.append((coder.split("->")[-1].strip(), coded))
    h0 = entropy_bits / 8
    print(f"\n{len(matrices)} block matrices, {params:,} parameters, int{bits} symbols (rtn clip={clip}); "
          "bytes exclude the fp16 row scales, which are identical for every coder")
    print(f"{'coder':<18} {'bytes':>12} {'bits/param':>11} {'vs H0':>9}")
    print(f"{'order-0 entropy':<18} {h0:>12,.0f} {8 * h0 / params:>11.4f} {'1.0000':>9}")
    for name, n in rows:
        print(f"{name:<18} {n:>12,} {8 * n / params:>11.4f} {n / h0:>9.4f}")


def gptq_vs_rtn(ckpt, hessians, bits_list: list[int], clip: str, val: str, tokenizer: str, seq_len: int) -> None:
    def score(state: dict) -> float:
        model = GPT(GPTConfig.from_dict(ckpt.model_config))
        model.load_state_dict(state)
        return evaluate_files(model, val, tokenizer, EvalSettings(seq_len), progress=False).val_bpb

    print(f"\nval_bpb after the round trip of the block matrices (clip={clip}; tok_emb and controls kept "
          f"in fp32), seq_len {seq_len}")
    print(f"{'weights':<10} {'val_bpb':>12} {'delta':>10}")
    base = score(ckpt.state_dict)
    print(f"{'float':<10} {base:>12.6f} {0:>+10.6f}")
    for q, bits in ((q, b) for b in bits_list for q in ("rtn", "gptq")):
        spec = load_spec(";".join(f"{p}={q} bits={bits} clip={clip} -> ans" for p in MATRICES) + "; *=fp32 -> zstd")
        state, _ = decode_state_dict(encode_state_dict(ckpt.state_dict, spec, hessians))
        bpb = score(state)
        print(f"{q + ' int' + str(bits):<10} {bpb:>12.6f} {bpb - base:>+10.6f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--calib", default=None, help="Hessians (default: CHECKPOINT's .calib.pt)")
    ap.add_argument("--val", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--bits", type=int, default=6)
    ap.add_argument("--clip", default="sdcap:12.85")
    ap.add_argument("--gptq-bits", default="4,6", help="bit widths for the GPTQ-vs-RTN comparison")
    ap.add_argument("--gptq-clip", default="mse")
    ap.add_argument("--seq-len", type=int, default=None)
    args = ap.parse_args()
    ckpt = load_checkpoint(args.checkpoint)
    calib = args.calib or args.checkpoint.replace(".pt", ".calib.pt")
    seq_len = args.seq_len or ckpt.train_seq_len
    coder_table(ckpt.state_dict, args.bits, args.clip)
    gptq_vs_rtn(ckpt, load_hessians(calib), [int(b) for b in args.gptq_bits.split(',')], args.gptq_clip, args.val, args.tokenizer, seq_len)


if __name__ == "__main__":
    main()
