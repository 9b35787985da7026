"""``golfpack bench rd``: the record reference and golfpack's points, measured in one run."""
import pytest
import torch

from golfpack.packer.bench_rd import RD, Point, format_rd, interpolate_bytes, record_export, spearman

from .test_cli import golfpack


def test_interpolated_bytes_for_a_target_quality():
    pts = [Point("a", 100, 1.30), Point("b", 200, 1.10), Point("c", 300, 1.05)]
    assert interpolate_bytes(pts, 1.20) == pytest.approx(150)
    assert interpolate_bytes(pts, 1.50) is None
    text = format_rd(RD(1.0, [Point("record", 200, 1.2), Point("golfpack fill 1.00x record bytes", 200, 1.1),
                              Point("golfpack fill 0.50x record bytes", 100, 1.3)], 1000, 0.5))
    assert "0.500x the record's" in text and "150 (25.0% fewer)" in text and "Spearman 0.500 over 3" in text
    better = format_rd(RD(1.0, [Point("record", 200, 1.2), Point("golfpack fill 0.80x record bytes", 160, 1.15)], 1000))
    assert "at most 160 (at least 20.0% fewer" in better


def test_spearman_ranks_with_ties():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2, 3], [5, 5, 6, 7]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)


def test_record_export_keeps_small_tensors_and_quantizes_matrices(trained):
    from golfpack.model.checkpoint import load_checkpoint
    from golfpack.trainer.calibrate import calib_path, load_hessians

    state = load_checkpoint(trained).state_dict
    nbytes, out = record_export(state, load_hessians(calib_path(trained)))
    w = state["blocks.0.mlp.fc.weight"]
    assert not torch.equal(out["blocks.0.mlp.fc.weight"], w)
    assert torch.equal(out["blocks.0.attn_scale"], state["blocks.0.attn_scale"].half().float())
    assert 0 < nbytes < sum(t.numel() for t in state.values())  # under 8 bits a parameter


@pytest.mark.slow
def test_bench_rd_runs_end_to_end(trained, small_val, tmp_path):
    from .conftest import SP1024

    out = golfpack("bench", "rd", str(trained), "--val", small_val, "--tokenizer", str(SP1024), "--val-tokens", "4096",
                   "--fractions", "0.9,1.0,1.2", "--plot", str(tmp_path / "rd.png"))
    assert out.returncode == 0, out.stderr
    print(out.stdout)
    assert "record int6 sdclip:12.85" in out.stdout and "golfpack fill 1.00x" in out.stdout
    assert "at the record's bytes" in out.stdout and (tmp_path / "rd.png").stat().st_size > 1000
    assert "Spearman" in out.stdout and "closed" not in out.stderr
