"""The stage API: what a codec stage is and how stages hand values to each other.

A stage turns one kind of value into another on the way to bytes::

    tensor --quantizer--> symbols --transform/coder--> bytes --compressor--> bytes

``encode`` may be heavy (GPTQ, searches) and runs only inside golfpack. ``decoder`` names a
function in a module that imports only the standard library, numpy, torch and the codec
libraries, because that module ships inside every artifact that uses the stage. A chain is
type-checked when a pipeline spec is built, long before anything is decoded.

To add a stage, subclass :class:`Stage`, declare ``Params`` as a dataclass, and expose the
class through the entry-point group ``golfpack.stages`` (see docs/stages.md).
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np
import torch

from .decoders.base import BYTES, KINDS, SYMBOLS, TENSOR, TensorMeta

__all__ = ["Stage", "Encoded", "EncodeContext", "TENSOR", "SYMBOLS", "BYTES", "StageError"]


class StageError(ValueError):
    """A stage or chain is misconfigured (unknown name, bad parameter, wrong hand-off)."""


@dataclass
class Encoded:
    """A stage's output: the value for the next stage, the params the decoder needs (stored
    in the manifest) and named side streams (stored and counted in the container)."""

    value: torch.Tensor | np.ndarray | bytes
    params: dict[str, Any] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)


@dataclass
class EncodeContext:
    meta: TensorMeta
    hessian: torch.Tensor | None = None  # GPTQ calibration statistics for this tensor


@dataclass
class _NoParams:
    pass


class Stage(ABC):
    name: ClassVar[str]
    consumes: ClassVar[str]
    produces: ClassVar[str]
    decoder: ClassVar[str]  # "module:function"
    Params: ClassVar[type] = _NoParams
    summary: ClassVar[str] = ""

    def __init__(self, **params: Any) -> None:
        fields = {f.name: f for f in dataclasses.fields(self.Params)}
        unknown = set(params) - set(fields)
        if unknown:
            raise StageError(f"stage '{self.name}': unknown parameter(s) {sorted(unknown)}; "
                             f"known: {sorted(fields) or 'none'}")
        try:
            self.params = self.Params(**{k: _coerce(v, fields[k].type) for k, v in params.items()})
        except (TypeError, ValueError) as e:
            raise StageError(f"stage '{self.name}': {e}") from None

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "name" in cls.__dict__:  # a concrete stage; unnamed classes are shared bases
            for attr in ("consumes", "produces", "decoder"):
                if not hasattr(cls, attr):
                    raise TypeError(f"stage class {cls.__name__} must define '{attr}'")
            if cls.consumes not in KINDS or cls.produces not in KINDS:
                raise TypeError(f"stage {cls.name}: kinds must be among {KINDS}")

    @abstractmethod
    def encode(self, value: Any, ctx: EncodeContext) -> Encoded: ...

    def describe(self) -> str:
        args = " ".join(f"{k}={v}" for k, v in dataclasses.asdict(self.params).items())
        return f"{self.name} {args}".strip()


def _coerce(value: Any, annotation: Any) -> Any:
    """Spec values arrive as strings or TOML scalars; convert to the declared field type."""
    kind = annotation if isinstance(annotation, type) else {"int": int, "float": float, "bool": bool, "str": str}.get(
        str(annotation), None)
    if kind is None or isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if kind is bool:
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {value!r}")
    return kind(value)


def params_of(stage_cls: type[Stage]) -> Mapping[str, Any]:
    """Declared parameters and their defaults, for ``golfpack stages``."""
    return {f.name: f.default for f in dataclasses.fields(stage_cls.Params)}
