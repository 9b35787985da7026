"""Start a training run on ``nproc`` local processes: in this process for one, through
torchrun for more (each rank then runs ``python -m golfpack.trainer``, ``__main__.py``, with the
resolved config written to a temporary file). ``golfpack train`` calls :func:`launch`; a child
process's stderr comes back through :func:`relay` (also ``golfpack run``'s)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from ..model.console import PHASE_LINE, printable
from ..model.distributed import torchrun_command
from .config import TrainConfig
from .qat import PlannerFactory
from .train import TrainResult, train


def launch(cfg: TrainConfig, *, nproc: int = 1, resume: str | os.PathLike | None = None, save_every: int = 0,
           force: bool = False, model_file: str | None = None,
           planner: PlannerFactory | None = None) -> TrainResult | None:
    """Train ``cfg``; the result when it ran here (``nproc`` 1). ``model_file``: the user's model
    module (``PATH.py``), which torchrun's processes import themselves; ``planner``: budget-aware
    QAT's (torchrun's processes import golfpack's own: ``qat.load_planner``)."""
    if nproc == 1:
        return train(cfg, resume=resume, force=force, save_every=save_every, planner=planner)
    fd, config = tempfile.mkstemp(suffix=".json", prefix="golfpack-train-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(cfg.to_dict(), f)
        cmd = torchrun_command(nproc, "-m", "golfpack.trainer", "--config", config, "--save-every", str(save_every))
        cmd += [f"--model-file={Path(model_file).resolve()}"] if model_file else []
        cmd += ([f"--resume={Path(resume).resolve()}"] if resume else []) + (["--force"] if force else [])
        rc, _, why = relay(cmd, True, capture=False, errors="golfpack train: error:")
    finally:
        Path(config).unlink(missing_ok=True)
    if rc:
        raise RuntimeError(why.removeprefix("golfpack train: error: ") or f"torchrun exited with status {rc}")
    return None


MAX_RESULT_BYTES = 1 << 20  # a child's stdout, when captured: one JSON line
MAX_LINE_CHARS = 300  # of each stderr line passed on or kept


def relay(command: list[str], echo: bool, *, capture: bool = True, errors: str = "") -> tuple[int, str, str]:
    """Run ``command`` (an artifact, or torchrun's ranks): its exit status, its stdout (captured
    and bounded, or with ``capture`` off passed through) and the one line that says why it
    failed: its last stderr line starting with ``errors``, else its last line that is not a
    phase line, escaped. Each stderr line is read as it comes (progress off a terminal is phase
    lines); with ``echo``, a phase line (``console.PHASE_LINE``) is written to ours through
    ``printable`` (an artifact's output is not ours to send to a terminal raw). Nothing else it
    prints reaches the terminal: torchrun's 50-line report of a failed rank becomes one line."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE, text=True,
                            errors="replace")
    out: list[str] = []

    def read_stdout() -> None:  # the first MAX_RESULT_BYTES kept, the rest drained so the child never blocks
        out.append(proc.stdout.read(MAX_RESULT_BYTES))
        while proc.stdout.read(1 << 16):
            pass

    reader = threading.Thread(target=read_stdout, daemon=True) if capture else None
    if reader is not None:
        reader.start()
    tail = said = ""
    while line := proc.stderr.readline(MAX_LINE_CHARS):
        if not line.endswith("\n"):  # a longer line: drop its rest
            while (rest := proc.stderr.readline(1 << 16)) and not rest.endswith("\n"):
                pass
        text = printable(line.rstrip("\n"))
        if re.fullmatch(PHASE_LINE, text):
            if echo:
                print(text, file=sys.stderr, flush=True)
        elif text:
            tail = text
            said = text if errors and text.startswith(errors) else said
    returncode = proc.wait()
    if reader is not None:
        reader.join()
    return returncode, "".join(out), said or tail
