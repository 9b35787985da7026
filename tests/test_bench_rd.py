"""``golfpack bench rd``: the record reference and golfpack's points, measured in one run."""
import pytest
import torch

from golfpack.packer.bench.rd import RD, Point, format_rd, interpolate_bytes, mirror_image, spearman
from golfpack.packer.bench.record_recipe import lqer_asym, record_export, record_export_full

from .test_cli import golfpack


def test_interpolated_bytes_for_a_target_quality():
    pts = [Point("a", 100, 1.30), Point("b", 200, 1.10), Point("c", 300, 1.05)]
    assert interpolate_bytes(pts, 1.20) == pytest.approx(150)
    assert interpolate_bytes(pts, 1.50) is None
    text = format_rd(RD(1.0, [Point("record", 200, 1.2, kind="record"),
                              Point("golfpack fill 1.00x record bytes", 200, 1.1, kind="fill", at_record=True),
                              Point("golfpack fill 0.50x record bytes", 100, 1.3, kind="fill"),
                              Point("record as run", 190, 1.15, kind="record-full"),
                              Point("golfpack fill at the record-as-run's bytes", 190, 1.03, kind="fill-full")], 1000, 0.5))
    assert "0.500x the record's" in text and "150 (25.0% fewer)" in text and "Spearman 0.500 over 5" in text
    assert "val_bpb increase 0.200x its" in text
    better = format_rd(RD(1.0, [Point("record", 200, 1.2, kind="record"),
                                Point("golfpack fill 0.80x record bytes", 160, 1.15, kind="fill")], 1000))
    assert "at most 160 (at least 20.0% fewer" in better


def test_the_mirror_image_splits_a_rise_into_its_even_and_odd_parts():
    """On a loss that is exactly L + g.d + d.d/2, the mirror image's score recovers both parts."""
    w = {"a": torch.tensor([1.0, -2.0, 0.5]), "n": torch.tensor([3, 4])}
    decoded = {"a": torch.tensor([1.25, -2.5, 0.5]), "n": torch.tensor([3, 4])}
    image = mirror_image(w, decoded)
    assert torch.equal(image["a"], torch.tensor([0.75, -1.5, 0.5])) and torch.equal(image["n"], w["n"])
    g = torch.tensor([0.3, 0.1, -2.0])
    loss = lambda sd: 1.0 + float(g @ (sd["a"] - w["a"])) + float((sd["a"] - w["a"]).square().sum()) / 2  # noqa: E731
    d = decoded["a"] - w["a"]
    point = Point("x", 10, loss(decoded), mirrored=loss(image))
    even, odd = point.parts(1.0)
    assert even == pytest.approx(float(d.square().sum()) / 2) and odd == pytest.approx(float(g @ d))
    # ranked by the even part, the prediction is right where the plain rise ranks it wrong
    pts = [Point("record", 200, 1.0 + 0.010 - 0.004, 0.02, kind="record", mirrored=1.0 + 0.010 + 0.004),
           Point("golfpack fill 1.00x record bytes", 200, 1.0 + 0.002 + 0.005, 0.004, kind="fill", at_record=True,
                 mirrored=1.0 + 0.002 - 0.005),
           Point("golfpack fill 0.80x record bytes", 160, 1.005, 0.01, kind="fill", mirrored=1.005)]
    predicted = [p.predicted for p in pts]
    plain, by_even = spearman(predicted, [p.val_bpb for p in pts]), spearman(predicted, [p.parts(1.0)[0] for p in pts])
    assert plain == pytest.approx(-0.5) and by_even == pytest.approx(1.0)
    text = format_rd(RD(1.0, pts, 1000, plain, by_even))
    assert "Δ even" in text and "+0.010000 -0.004000" in text and "+0.002000 +0.005000" in text
    assert "Spearman -0.500 over 3" in text and "even part (w+d and w-d): Spearman 1.000" in text
    assert "0.004000 median, 0.005000 largest" in text


def test_spearman_ranks_with_ties():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2, 3], [5, 5, 6, 7]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)


def test_record_export_keeps_small_tensors_and_quantizes_matrices(trained):
    from golfpack.model.checkpoint import load_checkpoint
    from golfpack.trainer.calibration_files import calib_path, load_hessians

    state = load_checkpoint(trained).state_dict
    nbytes, out = record_export(state, load_hessians(calib_path(trained)))
    w = state["blocks.0.mlp.fc.weight"]
    assert not torch.equal(out["blocks.0.mlp.fc.weight"], w)
    assert torch.equal(out["blocks.0.attn_scale"], state["blocks.0.attn_scale"].half().float())
    assert 0 < nbytes < sum(t.numel() for t in state.values())  # under 8 bits a parameter


def test_the_record_as_run_corrects_its_three_worst_matrices(trained):
    """Per-class clips, then LQER on the three matrices of largest error norm (A in INT2 with
    one scale, B in INT4 groups of 64), and its per-group lrzip bytes when lrzip is here."""
    import shutil

    from golfpack.codec.decoders.intq import dequantize
    from golfpack.codec.encoders.intq import GPTQParams
    from golfpack.codec.gptq import gptq_quantize
    from golfpack.model.checkpoint import load_checkpoint
    from golfpack.packer.bench.record_recipe import class_clip
    from golfpack.trainer.calibration_files import calib_path, load_hessians

    state = {k: v.float() for k, v in load_checkpoint(trained).state_dict.items()}
    hessians = load_hessians(calib_path(trained))
    full = record_export_full(state, hessians)
    gptq_only = {n: dequantize(*gptq_quantize(state[n], hessians[n], GPTQParams(
        bits=7 if "tok_emb" in n else 6, clip=f"sdclip:{class_clip(n, 'tok_emb' in n):g}")), tuple(state[n].shape), torch.float32)
        for n in hessians if n in state}
    norms = {n: float((state[n] - q).norm()) for n, q in gptq_only.items()}
    assert full.corrected == sorted(norms, key=lambda n: -norms[n])[:3]
    assert [n for n, q in gptq_only.items() if not torch.equal(q, full.state[n])] == sorted(full.corrected, key=list(gptq_only).index)
    (qa, sa, qb, sb), product = lqer_asym(torch.randn(96, 128, generator=torch.Generator().manual_seed(0)))
    assert qa.min() >= -2 and qa.max() <= 1 and sa.size == 1 and qb.min() >= -8 and qb.max() <= 7
    assert sb.size == 4 * 128 // 64 and product.shape == (96, 128)
    assert 0 < full.brotli_bytes < sum(t.numel() for t in state.values())
    assert (full.pergroup_bytes is None) == (shutil.which("lrzip") is None)
    print(f"\nrecord as run: brotli-11 {full.brotli_bytes:,} bytes, per-group lrzip {full.pergroup_bytes}")


def untied(trained, folder):
    """The trained tiny model with an untied head (a copy of its embedding), and its calibration
    file as a training run of that model writes it: the head's Hessian, none for the embedding
    (a lookup, which no hook sees)."""
    from golfpack.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from golfpack.trainer.calibration_files import calib_path

    ck = load_checkpoint(trained)
    state = {**ck.state_dict, "lm_head.weight": ck.state_dict["tok_emb.weight"].clone()}
    save_checkpoint(folder / "final.pt", Checkpoint(state, {**ck.model_config, "tie_embeddings": False},
                                                    ck.train_config, {}, None, ck.model_builder))
    hessians = torch.load(calib_path(trained), weights_only=True)
    hessians["lm_head.weight"] = hessians.pop("tok_emb.weight")
    torch.save(hessians, calib_path(folder / "final.pt"))
    return folder / "final.pt"


@pytest.mark.slow
def test_bench_rd_runs_end_to_end_on_an_untied_head(trained, train_glob, small_val, tmp_path):
    """Untied: the embedding has no calibration, and bench rd completes it as build does
    (the identity Hessian, said on stderr) for golfpack's exports and the records' alike."""
    from .conftest import SP1024

    ckpt = untied(trained, tmp_path)
    out = golfpack("bench", "rd", str(ckpt), "--train", train_glob, "--val", small_val, "--tokenizer", str(SP1024),
                   "--val-tokens", "4096",
                   "--fractions", "0.9,1.0", "--score-tokens", "4096", "--plot", str(tmp_path / "rd.png"), "--mirror")
    assert out.returncode == 0, out.stderr
    print(out.stdout)
    assert "calibration: none for tok_emb.weight; identity Hessian" in out.stdout + out.stderr
    assert "record int6 sdclip:12.85" in out.stdout and "golfpack fill 1.00x" in out.stdout
    assert "at the record's bytes" in out.stdout and (tmp_path / "rd.png").stat().st_size > 1000
    assert "Spearman" in out.stdout and "closed" not in out.stderr
    assert "Δ even" in out.stdout and "mirror image" in out.stdout and "against the rise's even part" in out.stdout
    assert "record as run: class clips + LQER + brotli-11" in out.stdout and "at the record-as-run's bytes" in out.stdout
