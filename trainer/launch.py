"""Start a training run on ``nproc`` local processes: in this process for one, through
torchrun for more (each rank then runs ``python -m golfpack.trainer``, ``__main__.py``, with the
resolved config written to a temporary file). ``golfpack train`` calls :func:`launch`."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

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
        rc = subprocess.call(cmd)
    finally:
        Path(config).unlink(missing_ok=True)
    if rc:
        raise RuntimeError(f"torchrun exited with status {rc}")
    return None
