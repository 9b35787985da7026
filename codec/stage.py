"""The stage API: what a codec stage is and how stages hand values to each other.

A stage turns one kind of value into another on the way to bytes::

    tensor --quantizer--> symbols --transform/coder--> bytes --compressor--> bytes

``encode`` may be heavy (GPTQ, searches) and runs only inside golfpack. Its decoder is found
by name, never typed: a stage defined in ``<package>.encoders.<name>`` decodes with
``<package>.decoders.<name>.decode``, a module that imports only the standard library, numpy,
torch and the codec libraries, because it ships inside every artifact that uses the stage. A
chain is type-checked when a pipeline spec is built, long before anything is decoded.

To add a stage, subclass :class:`Stage` in an ``encoders`` module, write the ``decoders``
module beside it, declare ``Params`` as a dataclass, and expose the class through the
entry-point group ``golfpack.stages`` (see docs/stages.md).
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np
import torch

from .decoders.base import BYTES, KINDS, SYMBOLS, TENSOR, TensorMeta
from .decoders.config import coerce
from .decoders.chain import DecoderSpec

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
    hessian: torch.Tensor | None = None  # calibration statistics for this tensor (stages that need_calibration)
    sensitivity: torch.Tensor | None = None  # the loss's sensitivity to each of its weights (the fill's row steps)


@dataclass
class _NoParams:
    pass


class Stage(ABC):
    name: ClassVar[str]
    consumes: ClassVar[str]
    produces: ClassVar[str]
    Params: ClassVar[type] = _NoParams
    summary: ClassVar[str] = ""
    needs_calibration: ClassVar[bool] = False  # encode() wants EncodeContext.hessian
    any_dtype: ClassVar[bool] = False  # codes integer and bool tensors too (every stage codes floats)

    def __init__(self, **params: Any) -> None:
        fields = {f.name: f for f in dataclasses.fields(self.Params)}
        unknown = set(params) - set(fields)
        if unknown:
            raise StageError(f"stage '{self.name}': unknown parameter(s) {sorted(unknown)}; "
                             f"known: {sorted(fields) or 'none'}")
        try:
            self.params = self.Params(**{k: coerce(v, _field_type(fields[k]), k) for k, v in params.items()})
        except (TypeError, ValueError) as e:
            raise StageError(f"stage '{self.name}': {e}") from None

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "name" in cls.__dict__:  # a concrete stage; unnamed classes are shared bases
            for attr in ("consumes", "produces"):
                if not hasattr(cls, attr):
                    raise TypeError(f"stage class {cls.__name__} must define '{attr}'")
            if cls.consumes not in KINDS or cls.produces not in KINDS:
                raise TypeError(f"stage {cls.name}: kinds must be among {KINDS}")
            decoder_module(cls)  # fails here, at import, for a stage outside an encoders module

    @classmethod
    def decoder(cls) -> DecoderSpec:
        return DecoderSpec(decoder_module(cls), cls.consumes, cls.produces)

    @abstractmethod
    def encode(self, value: Any, ctx: EncodeContext) -> Encoded: ...

    def describe(self) -> str:
        args = " ".join(f"{k}={v}" for k, v in dataclasses.asdict(self.params).items())
        return f"{self.name} {args}".strip()


def decoder_module(cls: type) -> str:
    """``pkg.encoders.name`` -> ``pkg.decoders.name``: a stage's two halves share one name."""
    parts = cls.__module__.split(".")
    if "encoders" not in parts[:-1]:
        raise TypeError(f"stage {cls.__name__} is defined in '{cls.__module__}'; stages live in a module "
                        "'<package>.encoders.<name>' whose decoder is '<package>.decoders.<name>'")
    i = len(parts) - 1 - parts[::-1].index("encoders")
    return ".".join(parts[:i] + ["decoders"] + parts[i + 1 :])


def _field_type(f: dataclasses.Field) -> type:
    """A Params field's declared type (annotations are strings under ``from __future__``)."""
    if isinstance(f.type, type):
        return f.type
    return {"int": int, "float": float, "bool": bool, "str": str}.get(str(f.type), str)


def params_of(stage_cls: type[Stage]) -> Mapping[str, Any]:
    """Declared parameters and their defaults, for ``golfpack stages``."""
    return {f.name: f.default for f in dataclasses.fields(stage_cls.Params)}
