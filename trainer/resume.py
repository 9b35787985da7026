"""A checkpoint's resume state: what ``train --resume`` needs to continue a run exactly, written
and read here only.

The state comes from a file, so it is hostile until :func:`read_resume` has checked every key
at every depth (the tensors themselves were checked dense and bounded by the torch-file reader,
``model/torch_files.py``); a crafted one is one line of error, never a traceback from deep in
``Run``."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from .qat import QatRule, parse_rules

REQUIRED_KEYS = ("model", "optimizers", "data", "step", "train_ms", "qat_on")
RESUME_KEYS = (*REQUIRED_KEYS, "ema", "qat_rules", "qat_plans")
MAX_OPTIMIZERS = 8


class ResumeError(ValueError):
    """A resume state golfpack cannot continue from."""


@dataclass
class ResumeState:
    model: dict[str, torch.Tensor]
    optimizers: list[dict]  # each optimizer's state_dict (torch checks its shapes when loading it)
    data: dict[str, int]  # the token stream's position: {"file_idx", "pos"}
    step: int
    train_ms: float
    qat_on: bool
    qat_rules: list[QatRule] = field(default_factory=list)
    qat_plans: int = 0
    ema: dict[str, torch.Tensor] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "optimizers": self.optimizers, "data": self.data, "step": self.step,
                "train_ms": self.train_ms, "qat_on": self.qat_on, "ema": self.ema,
                "qat_rules": [r.to_json() for r in self.qat_rules], "qat_plans": self.qat_plans}


def _tensors(value: object, what: str) -> dict[str, torch.Tensor]:
    if not (isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())):
        raise ResumeError(f"resume state: {what} is not a table of named tensors")
    return value


def _count(value: object, what: str) -> int:
    if type(value) is not int or value < 0:
        raise ResumeError(f"resume state: {what} must be a non-negative integer")
    return value


def read_resume(raw: object) -> ResumeState:
    """The resume state of a checkpoint, every field typed and bounded; unknown keys refused."""
    if not isinstance(raw, dict):
        raise ResumeError("resume state: not a table")
    unknown = sorted(set(raw) - set(RESUME_KEYS))
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if unknown or missing:
        raise ResumeError(f"resume state: {'unknown key ' + repr(unknown[0][:64]) if unknown else 'no ' + missing[0]}")
    optimizers = raw["optimizers"]
    if not (isinstance(optimizers, list) and len(optimizers) <= MAX_OPTIMIZERS
            and all(isinstance(o, dict) and set(o) == {"state", "param_groups"} for o in optimizers)):
        raise ResumeError("resume state: optimizers must be a list of optimizer states")
    data = raw["data"]
    if not (isinstance(data, dict) and set(data) == {"file_idx", "pos"}):
        raise ResumeError("resume state: data must be {file_idx, pos}")
    train_ms = raw["train_ms"]
    if type(train_ms) not in (int, float) or not math.isfinite(train_ms) or train_ms < 0:
        raise ResumeError("resume state: train_ms must be a finite non-negative number")
    if type(raw["qat_on"]) is not bool:
        raise ResumeError("resume state: qat_on must be true or false")
    try:
        rules = raw.get("qat_rules")
        if rules is not None and not isinstance(rules, list):
            raise ValueError("qat_rules must be a list")
        rules = parse_rules(rules or [])
    except ValueError as e:
        raise ResumeError(f"resume state: {e}") from None
    ema = raw.get("ema")
    return ResumeState(_tensors(raw["model"], "model"), optimizers,
                       {k: _count(data[k], f"data.{k}") for k in ("file_idx", "pos")}, _count(raw["step"], "step"),
                       float(train_ms), raw["qat_on"], rules, _count(raw.get("qat_plans", 0), "qat_plans"),
                       None if ema is None else _tensors(ema, "ema"))
