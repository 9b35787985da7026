"""Publishing outputs: atomic, no clobber without force even against a racing writer, and the
user's umask decides the mode."""
import os
import stat

import numpy as np
import pytest
import torch

from golfpack.model import files
from golfpack.model.checkpoint import Checkpoint, save_checkpoint
from golfpack.model.files import atomic_write_bytes
from golfpack.model.shards import write_shard
from golfpack.trainer.calibration_files import save_hessians


def test_no_clobber_is_decided_at_publish_time(tmp_path, monkeypatch):
    """A file that appears after the early check (another process) is kept, not replaced."""
    out = tmp_path / "a.pyz"
    real_link = os.link

    def racing_link(src, dst):
        out.write_bytes(b"theirs")  # the other writer wins the race
        return real_link(src, dst)

    monkeypatch.setattr(files.os, "link", racing_link)
    with pytest.raises(FileExistsError, match="--force"):
        atomic_write_bytes(out, b"ours", overwrite=False)
    assert out.read_bytes() == b"theirs" and sorted(p.name for p in tmp_path.iterdir()) == ["a.pyz"]


def test_without_hard_links_exclusive_create_still_refuses(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise PermissionError("hard links not supported here")

    monkeypatch.setattr(files.os, "link", no_links)
    out = tmp_path / "x.bin"
    atomic_write_bytes(out, b"first", overwrite=False)
    with pytest.raises(FileExistsError):
        atomic_write_bytes(out, b"second", overwrite=False)
    assert out.read_bytes() == b"first" and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_mode_follows_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "f", b"x", overwrite=True)
        atomic_write_bytes(tmp_path / "g", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "g").stat().st_mode) == mode


def test_overwrite_replaces_atomically(tmp_path):
    out = tmp_path / "c.pt"
    out.write_bytes(b"old")
    atomic_write_bytes(out, b"new", overwrite=True)
    assert out.read_bytes() == b"new" and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("write", [
    lambda p: atomic_write_bytes(p, b"new"),
    lambda p: save_checkpoint(p, Checkpoint({"w": torch.zeros(2)}, {})),
    lambda p: save_hessians(p, {"w": torch.eye(2)}),
    lambda p: write_shard(p, [1, 2, 3]),
], ids=["bytes", "checkpoint", "calibration", "shard"])
def test_nothing_is_replaced_by_default(tmp_path, write):
    out = tmp_path / "mine.bin"
    out.write_bytes(b"the user's")
    with pytest.raises(FileExistsError, match="--force"):
        write(out)
    assert out.read_bytes() == b"the user's" and len(list(tmp_path.iterdir())) == 1


def test_a_log_is_appended_to_but_never_through_a_link(tmp_path):
    from golfpack.model.files import append_line

    log = tmp_path / "train.log"
    append_line(log, "step:1")
    append_line(log, "step:2")
    assert log.read_text() == "step:1\nstep:2\n"
    outside = tmp_path / "outside.txt"
    outside.write_text("mine\n")
    planted = tmp_path / "run" / "train.log"
    planted.parent.mkdir()
    planted.symlink_to(outside)
    with pytest.raises(OSError, match="never followed"):
        append_line(planted, "step:1")
    assert outside.read_text() == "mine\n"


def test_a_shard_without_tokens_is_refused_not_waited_on(tmp_path):
    from golfpack.model.shards import ShardError, TokenStream, write_shard

    write_shard(tmp_path / "fineweb_train_000000.bin", np.zeros(0, dtype=np.uint16))
    with pytest.raises(ShardError, match="holds no tokens"):
        TokenStream(str(tmp_path / "fineweb_train_*.bin")).take(10)


def test_validation_shards_are_refused_as_training_data(tmp_path, monkeypatch):
    """By the challenge's file name, and by identity with the validation glob (a renamed copy)."""
    from golfpack.model.shards import ShardError, TokenStream, write_shard

    tokens = np.arange(1, 2000, dtype=np.uint16) % 1024
    write_shard(tmp_path / "fineweb_val_000000.bin", tokens)
    write_shard(tmp_path / "fineweb_train_000000.bin", tokens)  # the same bytes under a training name
    write_shard(tmp_path / "fineweb_train_000001.bin", tokens[::-1].copy())
    with pytest.raises(ShardError, match="a validation shard, given as training data"):
        TokenStream(str(tmp_path / "fineweb_val_*.bin"))
    val = str(tmp_path / "fineweb_val_*.bin")
    with pytest.raises(ShardError, match="the same data as a validation shard"):
        TokenStream(str(tmp_path / "fineweb_train_*.bin"), val=val)
    assert TokenStream(str(tmp_path / "fineweb_train_000001.bin"), val=val).take(3).numel() == 3
    monkeypatch.setenv("GOLFPACK_ALLOW_VALIDATION_AS_TRAINING", "1")
    assert TokenStream(val, val=val).take(3).numel() == 3
