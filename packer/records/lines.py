"""A records run's log lines and file names, each spelled once here: ``train_gpt.py`` writes
the lines (each a :class:`LogLine`, one template for writer and parser), ``golfpack submit``
reads them into ``submission.json`` and ``golfpack check`` reads them again to hold the JSON
to them.

The formats follow the challenge's own ``train_gpt.py`` (``Code size: N bytes``,
``final_..._roundtrip_exact val_loss:X val_bpb:Y`` with 8 decimals); the trainer's step lines
(``trainer/log_line.py``'s ``STEP_VAL``, which the trainer writes) give steps and the step average.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ...trainer.log_line import STEP_VAL, LogLine

MODEL = LogLine("Serialized model golfpack: {bytes:int} bytes ({file:word} sha256:{sha256:sha256})")
CODE = LogLine("Code size: {bytes:int} bytes")
TOTAL = LogLine("Total submission size golfpack: {bytes:int} bytes")
ROUNDTRIP = LogLine("final_golfpack_roundtrip val_loss:{val_loss:f4} val_bpb:{val_bpb:f4} eval_time:{eval_ms:ms}ms")
EXACT = LogLine("final_golfpack_roundtrip_exact val_loss:{val_loss:f8} val_bpb:{val_bpb:f8}")
FULL = LogLine("final_golfpack_roundtrip_full val_loss:{val_loss:repr} val_bpb:{val_bpb:repr}")  # every digit
SUMMARY = {"model": MODEL, "code": CODE, "total": TOTAL, "roundtrip": ROUNDTRIP, "exact": EXACT, "full": FULL}
RUN_ID = r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}"  # a run's name in its file names: no path, no leading dot
LOG_FILE, MODEL_FILE, SEED_RUN_ID = "train_{}.log", "final_model_{}.gpak", "seed{}"  # a run's files, by RUN_ID
MAX_LOG_BYTES = 64 << 20  # a log is read whole; anything larger is not a records log


class LogError(ValueError):
    """A records log lacks a line a submission needs, or has it twice."""


@dataclass(frozen=True)
class OwnRunNumbers:
    """What the log of any run says in these formats: the model file, the code, the total and
    the round-trip score; all a participant's own script (``golfpack inline``) must log, with
    ``MODEL``, ``CODE``, ``TOTAL`` and ``EXACT`` once each (docs/own-script.md)."""

    val_loss: float
    val_bpb: float
    model_bytes: int
    model_file: str
    model_sha256: str
    code_bytes: int
    artifact_bytes: int


@dataclass(frozen=True)
class RunNumbers(OwnRunNumbers):
    """What one seed's log of golfpack's records script says: the numbers ``submission.json``
    may claim for it."""

    steps: int
    step_avg_ms: float
    train_time_ms: int
    eval_time_s: float


def seed_run_id(seed: int | str) -> str:
    """The ``RUN_ID`` of a seed's run (the script's default, and ``submit``'s): its log and
    model file are named by it."""
    return SEED_RUN_ID.format(seed)


def log_name(run_id: str) -> str:
    return LOG_FILE.format(run_id)


def model_name(run_id: str) -> str:
    return MODEL_FILE.format(run_id)


def name_pattern(template: str, run_id: str = RUN_ID) -> str:
    """A regex for the file names of ``template`` (``LOG_FILE``, ``MODEL_FILE``) with the run's
    name matched by ``run_id`` (a pattern)."""
    return re.escape(template).replace(r"\{\}", run_id)


SEED_LOG = re.compile(name_pattern(LOG_FILE, name_pattern(SEED_RUN_ID, "([0-9]+)")))


def seed_of_log(name: str) -> str | None:
    """The seed whose log ``name`` is, or None."""
    m = SEED_LOG.fullmatch(name)
    return None if m is None else m.group(1)


def lines_of(text: str, templates: dict[str, LogLine], once: tuple[str, ...], source: str) -> dict[str, list[dict]]:
    """Every line of ``text`` that fits one of ``templates``, by key; those keyed in ``once``
    must appear exactly once."""
    found: dict[str, list[dict]] = {k: [] for k in templates}
    for line in text.splitlines():
        for key, template in templates.items():
            fields = template.match(line)
            if fields is not None:
                found[key].append(fields)
    for key in once:
        if len(found[key]) != 1:
            raise LogError(f"{source}: expected one line '{templates[key].template}', found {len(found[key])}")
    return found


def parse_own_log(text: str, source: str) -> OwnRunNumbers:
    """The numbers of one run of an inlined script; each of its four lines exactly once."""
    wanted = {"model": MODEL, "code": CODE, "total": TOTAL, "exact": EXACT}
    found = lines_of(text, wanted, tuple(wanted), source)
    (model,), (code,), (total,), (exact,) = (found[k] for k in wanted)
    return OwnRunNumbers(exact["val_loss"], exact["val_bpb"], model["bytes"], model["file"], model["sha256"],
                         code["bytes"], total["bytes"])


def parse_log(text: str, source: str) -> RunNumbers:
    """The numbers of one run; each summary line must appear exactly once, and the last step
    line gives steps and step average."""
    found = lines_of(text, {**SUMMARY, "step": STEP_VAL}, tuple(SUMMARY), source)
    if not found["step"]:
        raise LogError(f"{source}: no step line with val_loss/val_bpb")
    (model,), (exact,), (full,), step = found["model"], found["exact"], found["full"], found["step"][-1]
    if any(abs(exact[k] - full[k]) > 5.1e-9 for k in ("val_loss", "val_bpb")):
        raise LogError(f"{source}: the exact and full round-trip lines disagree")
    return RunNumbers(full["val_loss"], full["val_bpb"], model["bytes"], model["file"], model["sha256"],
                      found["code"][0]["bytes"], found["total"][0]["bytes"], step["step"], step["step_avg_ms"],
                      step["train_ms"], found["roundtrip"][0]["eval_ms"] / 1000.0)
