"""Trust, round 4: the strict readers of torch files and checkpoints. Each craft is refused in
one line, exit 1, within the CPU and memory bounds of tests/hostile.py, with nothing it names
imported (``this`` would print the Zen of Python) and no file system walked."""
from __future__ import annotations

import numpy as np
import torch
import pytest

from golfpack.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from golfpack.model.torch_files import TorchFileError, check_tree
from golfpack.trainer.config import TrainConfig

from .conftest import SP1024, make_tiny
from .hostile import golfpack_measured, refused

ZEN = "Beautiful is better"


def golfpack_checkpoint(path, **edits) -> str:
    m = make_tiny(0)
    obj = {"format": "golfpack.checkpoint", "version": 1, "model_builder": "golfpack.model.gpt:build",
           "model_config": m.cfg.to_dict(), "state_dict": dict(m.state_dict()), "train_config": TrainConfig().to_dict(),
           "meta": {}, "resume": None}
    obj.update(edits)
    torch.save(obj, path)
    return str(path)


@pytest.mark.slow
def test_a_train_config_never_names_other_code_than_the_checkpoint(tmp_path):
    train_config = {**TrainConfig().to_dict(), "model_builder": "this:x"}
    ckpt = golfpack_checkpoint(tmp_path / "nested.pt", train_config=train_config)
    for args in (["submit", ckpt, "--out", str(tmp_path / "rec"), "--script-only"],
                 ["build", ckpt, "--out", str(tmp_path / "a.pyz"), "--pipeline", "*=fp16 -> brotli"]):
        text = refused(golfpack_measured(*args), "its train_config names model builder 'this:x'")
        assert ZEN not in text
    assert not (tmp_path / "rec").exists() and not (tmp_path / "a.pyz").exists()


@pytest.mark.slow
@pytest.mark.parametrize("edit, message", [
    ({"extra": 1}, "unknown checkpoint key 'extra'"),
    ({"meta": [1, 2]}, "its meta is not a table"),
    ({"state_dict": {"w": torch.zeros(1).expand(30_000, 30_000)}}, "rather than its own storage"),
    ({"meta": {"plan": [list(range(65_536))] * 2}}, "shared between two places"),
])
def test_a_crafted_checkpoint_is_refused_before_anything_uses_it(tmp_path, small_val, edit, message):
    ckpt = golfpack_checkpoint(tmp_path / "c.pt", **edit)
    refused(golfpack_measured("eval", ckpt, "--val", small_val, "--tokenizer", str(SP1024), "--seq-len", "64"),
            message)


@pytest.mark.slow
def test_a_calibration_file_of_views_is_refused_before_it_is_read(tmp_path):
    m = make_tiny(0)
    save_checkpoint(tmp_path / "m.pt", Checkpoint(m.state_dict(), m.cfg.to_dict()))
    torch.save({"blocks.0.attn.c_q.weight": torch.ones(1, 1).expand(30_000, 30_000)}, tmp_path / "views.pt")
    refused(golfpack_measured("build", str(tmp_path / "m.pt"), "--out", str(tmp_path / "a.pyz"),
                              "--calib", str(tmp_path / "views.pt")), "rather than its own storage")


@pytest.mark.slow
def test_a_shard_glob_lists_one_folder(tmp_path, small_val):
    m = make_tiny(0)
    save_checkpoint(tmp_path / "m.pt", Checkpoint(m.state_dict(), m.cfg.to_dict()))
    refused(golfpack_measured("eval", str(tmp_path / "m.pt"), "--val", "/*/*/*/*/*.bin", "--tokenizer", str(SP1024)),
            "wildcards only in the file name")


def test_check_tree_holds_each_promise():
    """In process, the reader's rules one by one (the subprocess tests above hold the bounds)."""
    t = torch.arange(6.0)
    check_tree({"a": t, "b": t, "c": [1, "x", None, 2.5, True]}, 1 << 10, "f")  # a tensor may repeat
    with pytest.raises(TorchFileError, match="view"):
        check_tree({"a": t[1:]}, 1 << 10, "f")  # offset into a larger storage
    with pytest.raises(TorchFileError, match="view"):
        check_tree({"a": t.reshape(2, 3).t()}, 1 << 10, "f")  # not contiguous
    with pytest.raises(TorchFileError, match="times the file"):
        check_tree({"a": [t] * 50_000}, 100, "f")  # one stored tensor referenced until it is a bomb
    with pytest.raises(TorchFileError, match="nested"):
        deep: list = []
        for _ in range(40):
            deep = [deep]
        check_tree(deep, 1 << 10, "f")
    with pytest.raises(TorchFileError, match="keys"):
        check_tree({1.5: 2}, 1 << 10, "f")
    with pytest.raises(TorchFileError, match="holds a"):
        check_tree({"a": {1, 2}}, 1 << 10, "f")


def test_golfpacks_own_files_pass_the_reader(tmp_path):
    """A checkpoint written by save_checkpoint (with a train config) loads through it unchanged."""
    m = make_tiny(1)
    save_checkpoint(tmp_path / "m.pt", Checkpoint(m.state_dict(), m.cfg.to_dict(), TrainConfig().to_dict(),
                                                  {"step": 3}))
    ck = load_checkpoint(tmp_path / "m.pt")
    assert all(torch.equal(ck.state_dict[k], v) for k, v in m.state_dict().items()) and ck.meta == {"step": 3}


def test_ctxans_declares_the_tables_it_models_as_work():
    """Each class table is modelled over its whole alphabet: 300 one-row tensors of 16 classes over
    65,536 symbols passed as 4,800 steps before (and took seconds to model); now they count 81,600
    and are refused before any stream is read. A genuine table of 255 symbols still counts one."""
    from golfpack.codec.decoders.base import TensorMeta
    from golfpack.codec.decoders.chain import check_container
    from golfpack.codec.decoders.container import ContainerError, read_container, write_container
    from golfpack.codec.decoders.ctxans import steps
    from golfpack.codec.registry import decoder_table

    def container(tensors: int, n: int) -> bytes:
        chain = [("rtn", {"bits": 6}, {"scales": b"\0\x3c"}),
                 ("ctxans", {"k": 16, "n": n, "lo": 0}, {"classes": b"\0" * 8, "tables": b""})]
        return write_container([(TensorMeta(f"t{i}", "float32", (1, 16)), chain, b"") for i in range(tensors)], {})

    meta = TensorMeta("t", "float32", (1, 16))
    assert steps({"k": 16, "n": 65_536}, meta) == 16 * 17 and steps({"k": 16, "n": 255}, meta) == 16
    check_container(read_container(container(300, 255)), decoder_table())  # 4,800 steps: within the bound
    with pytest.raises(ContainerError, match="steps"):
        check_container(read_container(container(300, 65_536)), decoder_table())


@pytest.fixture(scope="module")
def resumable(tmp_path_factory, train_glob):
    """A tiny run's checkpoint at step 2 of 4, with its resume state."""
    from golfpack.trainer.train import train

    from .test_trainer import tiny_cfg

    out = tmp_path_factory.mktemp("resumable")
    train(tiny_cfg(out / "a", train_glob, "iterations=4"), save_every=2, echo=lambda _: None)
    return out / "a" / "step_000002.pt"


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.update(step="2"), "step must be a non-negative integer"),
    (lambda r: r.update(extra=1), "unknown key 'extra'"),
    (lambda r: r.pop("data"), "no data"),
    (lambda r: r.update(data={"file_idx": 99, "pos": 0}), "stream position: shard 99"),
    (lambda r: r["data"].update(pos=10**12), "stream position: token"),
    (lambda r: r.update(train_ms=float("inf")), "train_ms"),
    (lambda r: r.update(optimizers=[]), "optimizer states for"),
    (lambda r: r.update(optimizers="adam"), "optimizers must be a list"),
    (lambda r: r.update(model={}), "cannot continue"),
    (lambda r: r.update(ema={"x": torch.zeros(1)}), "ema does not match"),
    (lambda r: r.update(qat_on=1), "qat_on must be true or false"),
])
def test_a_crafted_resume_state_is_one_line_and_writes_nothing(resumable, train_glob, tmp_path, edit, message):
    from golfpack.trainer.train import train

    from .test_trainer import tiny_cfg

    ck = load_checkpoint(resumable)
    edit(ck.resume)
    save_checkpoint(tmp_path / "crafted.pt", ck)
    with pytest.raises(ValueError, match=message):
        train(tiny_cfg(tmp_path / "b", train_glob, "iterations=4"), resume=tmp_path / "crafted.pt",
              echo=lambda _: None)
    assert not (tmp_path / "b" / "final.pt").exists()


def test_the_genuine_resume_state_round_trips(resumable):
    from golfpack.trainer.resume import read_resume

    raw = load_checkpoint(resumable).resume
    state = read_resume(raw)
    again = state.to_dict()
    assert set(again) == set(raw) and again["step"] == raw["step"] == 2 and again["data"] == raw["data"]
    assert all(torch.equal(again["model"][k], v) for k, v in raw["model"].items())


@pytest.mark.parametrize("seq_len", [0, float("inf"), "1024", 1 << 30])
def test_a_train_seq_len_that_is_not_one_is_refused_by_name(seq_len):
    from golfpack.model.checkpoint import CheckpointError

    m = make_tiny(0)
    ck = Checkpoint(m.state_dict(), m.cfg.to_dict(), {"train_seq_len": seq_len}, source="c.pt")
    with pytest.raises(CheckpointError, match="c.pt: its train_config's train_seq_len"):
        ck.train_seq_len


@pytest.mark.slow
def test_a_plain_pickle_is_one_line_without_torchs_warning(tmp_path, small_val):
    import pickle

    (tmp_path / "p.pt").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    refused(golfpack_measured("eval", str(tmp_path / "p.pt"), "--val", small_val, "--tokenizer", str(SP1024)),
            "not a loadable torch checkpoint")


# The families again, each through the CLI as a user meets it (one line, exit 1, within
# tests/hostile.py's CPU and memory bounds), where the tests above hold them in process.

def train_args(out, train_glob, small_val, *extra: str) -> list[str]:
    from .test_trainer import TINY_SETS

    sets = [a for s in [*TINY_SETS, "iterations=4", *extra] for a in ("--set", s)]
    return ["train", *sets, "--train", train_glob, "--val", small_val, "--tokenizer", str(SP1024), "--out", str(out)]


def edited_resume(resumable, path, edit) -> str:
    ck = load_checkpoint(resumable)
    edit(ck.resume)
    save_checkpoint(path, ck)
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("edit, message", [
    (lambda r: r["data"].update(pos=10**12), "stream position: token"),
    (lambda r: r.update(optimizers="adam"), "optimizers must be a list"),
    (lambda r: r.update(step=-1), "step must be a non-negative integer"),
])
def test_a_crafted_resume_state_is_refused_by_the_cli(resumable, train_glob, small_val, tmp_path, edit, message):
    crafted = edited_resume(resumable, tmp_path / "crafted.pt", edit)
    refused(golfpack_measured(*train_args(tmp_path / "b", train_glob, small_val), "--resume", crafted), message)
    assert not (tmp_path / "b" / "final.pt").exists()


@pytest.mark.slow
def test_resume_never_appends_to_a_log_outside_the_folder(resumable, train_glob, small_val, tmp_path):
    """``train.log`` in ``--out`` that is a symlink is refused, and its target is not touched."""
    outside = tmp_path / "outside.txt"
    outside.write_text("mine\n")
    out = tmp_path / "b"
    out.mkdir()
    (out / "train.log").symlink_to(outside)
    refused(golfpack_measured(*train_args(out, train_glob, small_val), "--resume", str(resumable)), "symbolic link")
    assert outside.read_text() == "mine\n" and not (out / "final.pt").exists()


def zero_token_shard(path) -> str:
    from golfpack.model.shards import HEADER_INTS, SHARD_MAGIC

    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (SHARD_MAGIC, 1, 0)
    path.write_bytes(header.tobytes())
    return str(path)


@pytest.mark.slow
def test_a_shard_without_tokens_is_refused_in_training_and_calibration(tmp_path, small_val):
    empty = zero_token_shard(tmp_path / "fineweb_train_000000.bin")
    refused(golfpack_measured(*train_args(tmp_path / "run", empty, small_val)), "holds no tokens")
    m = make_tiny(0)
    save_checkpoint(tmp_path / "m.pt", Checkpoint(m.state_dict(), m.cfg.to_dict()))
    refused(golfpack_measured("build", str(tmp_path / "m.pt"), "--out", str(tmp_path / "a.pyz"), "--calib", empty),
            "holds no tokens")
    assert not (tmp_path / "a.pyz").exists()


@pytest.mark.slow
def test_paths_inside_a_checkpoint_are_never_followed(tmp_path):
    """A train config whose shards are ``/*/*/*/*/*.bin``: build calibrates only from what the
    command line names (here nothing: it says so), and never lists a folder the file names."""
    train_config = {**TrainConfig().to_dict(), "train_files": "/" + "*/" * 6 + "*.bin"}
    ckpt = golfpack_checkpoint(tmp_path / "c.pt", train_config=train_config)
    proc, peak, cpu = golfpack_measured("build", ckpt, "--out", str(tmp_path / "a.pyz"))
    print(f"rc {proc.returncode}, peak {peak:.0f} MB, cpu {cpu:.2f} s: {proc.stderr.strip().splitlines()[-2:]}")
    assert proc.returncode == 1 and "--calib" in proc.stderr and "Traceback" not in proc.stderr
    assert cpu <= 1.0 and not (tmp_path / "a.pyz").exists()


@pytest.mark.slow
def test_a_sensitivity_file_of_views_is_refused_before_it_is_read(tmp_path, train_glob):
    m = make_tiny(0)
    save_checkpoint(tmp_path / "final.pt", Checkpoint(m.state_dict(), m.cfg.to_dict()))
    from golfpack.trainer.calibration_files import sens_path

    torch.save({"blocks.0.attn.c_q.weight": torch.ones(1, 1).expand(30_000, 30_000)}, sens_path(tmp_path / "final.pt"))
    refused(golfpack_measured("build", str(tmp_path / "final.pt"), "--out", str(tmp_path / "a.pyz"),
                              "--calib", train_glob), "rather than its own storage")


@pytest.mark.slow
def test_a_flood_of_qat_rules_in_a_checkpoint_is_refused(tmp_path):
    """65,536 distinct QAT globs in a checkpoint's train config (each would be matched against every
    tensor): refused by the rules' reader, before any matching. Its cost is torch's unpickler
    (pure Python: 0.52 to 0.61 s for the pickle's 262,144 objects, measured alone, before any check can see
    them), so it is held to the issue's 2 CPU seconds, not the tighter 1 s of the others."""
    rules = [[f"blocks.{i}.*", 4, "absmax"] for i in range(65_536)]
    train_config = {**TrainConfig().to_dict(), "qat_rules": rules}
    ckpt = golfpack_checkpoint(tmp_path / "c.pt", train_config=train_config)
    refused(golfpack_measured("submit", ckpt, "--out", str(tmp_path / "rec"), "--script-only"), "qat_rules",
            max_cpu=2.0)
    assert not (tmp_path / "rec").exists()


@pytest.mark.slow
def test_column_scales_out_of_range_in_a_resume_state_are_refused(resumable, train_glob, small_val, tmp_path):
    """A QAT rule with column scales of 1e300 would train every weight to NaN."""
    crafted = edited_resume(resumable, tmp_path / "crafted.pt", lambda r: r.update(
        qat_on=True, qat_rules=[["blocks.0.attn.c_q.weight", 4, "absmax", 0.5, [1e300] * 64]]))
    refused(golfpack_measured(*train_args(tmp_path / "b", train_glob, small_val), "--resume", crafted),
            "column scales must be")
    assert not (tmp_path / "b" / "final.pt").exists()
