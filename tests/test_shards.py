import numpy as np
import pytest

from golfpack.model.shards import HEADER_BYTES, ShardError, TokenStream, read_shard, write_shard


def test_round_trip(tmp_path):
    tokens = np.random.default_rng(0).integers(0, 65536, size=1000).astype(np.uint16)
    write_shard(tmp_path / "a.bin", tokens)
    assert (tmp_path / "a.bin").stat().st_size == HEADER_BYTES + 2000
    assert np.array_equal(read_shard(tmp_path / "a.bin"), tokens)


def _corrupt(path, index, value):
    header = np.fromfile(path, dtype="<i4", count=256)
    header[index] = value
    data = path.read_bytes()
    path.write_bytes(header.tobytes() + data[HEADER_BYTES:])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda p: _corrupt(p, 0, 123), "wrong magic"),
        (lambda p: _corrupt(p, 1, 2), "unsupported shard version"),
        (lambda p: _corrupt(p, 2, 11), "header says 11 tokens"),
        (lambda p: p.write_bytes(p.read_bytes()[:-1]), "header says 10 tokens"),
        (lambda p: p.write_bytes(p.read_bytes()[:100]), "too short"),
    ],
)
def test_malformed_shards_name_file_and_problem(tmp_path, mutate, message):
    path = tmp_path / "bad.bin"
    write_shard(path, np.arange(10, dtype=np.uint16))
    mutate(path)
    with pytest.raises(ShardError, match=message) as e:
        read_shard(path)
    assert str(path) in str(e.value)


def test_token_beyond_vocab(tmp_path):
    write_shard(tmp_path / "v.bin", [1, 5, 1024, 7])
    with pytest.raises(ShardError, match="token id 1024 at position 2 is >= vocab size 1024"):
        read_shard(tmp_path / "v.bin", vocab_size=1024)


def test_missing_file(tmp_path):
    with pytest.raises(ShardError, match="no such shard"):
        read_shard(tmp_path / "nope.bin")


def test_token_stream_wraps_across_shards(tmp_path):
    write_shard(tmp_path / "s_000.bin", [0, 1, 2])
    write_shard(tmp_path / "s_001.bin", [3, 4])
    stream = TokenStream(str(tmp_path / "s_*.bin"))
    assert stream.take(4).tolist() == [0, 1, 2, 3]
    state = stream.state()
    assert stream.take(4).tolist() == [4, 0, 1, 2]
    stream.restore(state)
    assert stream.take(2).tolist() == [4, 0]
    assert stream.take(0).tolist() == [] and stream.take(1).tolist() == [1]  # nothing taken, nothing skipped


def test_skip_leaves_the_stream_where_take_would(tmp_path):
    """``skip`` reads headers, not shards; from any position, any distance (wrapping included),
    the tokens after it are the tokens after ``take``."""
    write_shard(tmp_path / "s_000.bin", [0, 1, 2])
    write_shard(tmp_path / "s_001.bin", [3, 4])
    write_shard(tmp_path / "s_002.bin", [5, 6, 7, 8])
    for start in range(0, 10):
        for n in range(0, 22):
            a, b = TokenStream(str(tmp_path / "s_*.bin")), TokenStream(str(tmp_path / "s_*.bin"))
            a.take(start), b.take(start)
            a.take(n)
            b.skip(n)
            assert b.take(7).tolist() == a.take(7).tolist(), (start, n)
