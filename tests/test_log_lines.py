"""Log lines: one template each gives both the writer and the parser (records lines and the
trainer's step line), so what a run writes is exactly what submit and check read."""
import random

import pytest

from golfpack.packer.records import lines
from golfpack.trainer.log_line import STEP_VAL, LogLine

SAMPLES = {"int": lambda r: r.randrange(10**9), "ms": lambda r: r.uniform(0, 1e6), "f2": lambda r: r.uniform(0, 1e4),
           "f4": lambda r: r.uniform(0, 10), "f8": lambda r: r.uniform(0, 10), "repr": lambda r: r.uniform(0, 10),
           "word": lambda r: r.choice(["final_model_seed1.gpak", "a.b"]), "sha256": lambda r: "%064x" % r.getrandbits(256)}


@pytest.mark.parametrize("line", [*lines.SUMMARY.values(), STEP_VAL], ids=[*lines.SUMMARY, "step"])
def test_every_line_reads_back_what_it_wrote(line):
    rng = random.Random(0)
    for _ in range(50):
        values = {name: SAMPLES[kind](rng) for name, kind in line.kinds.items()}
        text = line.format(**values)
        read = line.match(text)
        assert read is not None and line.format(**read) == text
        assert all(read[k] == values[k] for k, kind in line.kinds.items() if kind in ("int", "repr", "word", "sha256"))
        assert line.match(text + " extra") is None and line.match("x" + text) is None


def test_the_step_line_is_the_one_the_challenge_logs():
    text = STEP_VAL.format(step=20, iterations=20, val_loss=2.5, val_bpb=1.25, train_ms=1234.4, step_avg_ms=61.72)
    assert text == "step:20/20 val_loss:2.5000 val_bpb:1.2500 train_time:1234ms step_avg:61.72ms"


def test_templates_and_values_are_checked():
    with pytest.raises(ValueError, match="bad field"):
        LogLine("x:{a:float}")
    with pytest.raises(ValueError, match="bad field"):
        LogLine("{a:int} {a:int}")
    with pytest.raises(TypeError, match="takes"):
        lines.CODE.format(byte=3)


def test_file_names_are_spelled_once():
    assert lines.log_name(lines.seed_run_id(42)) == "train_seed42.log"
    assert lines.seed_of_log("train_seed42.log") == "42" and lines.seed_of_log("train_x42.log") is None
    assert lines.model_name("seed7") == "final_model_seed7.gpak"
