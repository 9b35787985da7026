"""Container -> tensors, through a trusted table of stage decoders.

The table maps a stage name to its decoder's import target and kinds; it comes from golfpack's
registry (in-process) or from the artifact's own list of shipped decoders, never from the
container. Chains are type-checked against the table before any stream is decoded.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from .container import Container, ContainerError, Entry
from .decoders.base import BYTES, TENSOR, DecodeError


@dataclass(frozen=True)
class DecoderSpec:
    target: str  # "package.module:function"
    consumes: str
    produces: str

    def load(self) -> Callable:
        module, _, fn = self.target.partition(":")
        return getattr(importlib.import_module(module), fn)


def table_from_json(doc: Mapping[str, list]) -> dict[str, DecoderSpec]:
    """The decoder table as an artifact's manifest stores it: name -> [target, consumes, produces]."""
    return {name: DecoderSpec(*spec) for name, spec in doc.items()}


def check_chain(entry: Entry, table: Mapping[str, DecoderSpec]) -> None:
    name = entry.meta.name
    kind = TENSOR
    for rec in entry.chain:
        spec = table.get(rec.stage)
        if spec is None:
            raise ContainerError(f"tensor '{name}': no decoder for stage '{rec.stage}'")
        if spec.consumes != kind:
            raise ContainerError(f"tensor '{name}': stage '{rec.stage}' consumes {spec.consumes}, gets {kind}")
        kind = spec.produces
    if kind != BYTES:
        raise ContainerError(f"tensor '{name}': chain ends in {kind}, not bytes")


def undo_stages(container: Container, entry: Entry, table: Mapping[str, DecoderSpec], keep: int = 0) -> Any:
    """Run the decoders of ``entry.chain[keep:]`` backwards over its data stream: ``keep=0``
    gives the tensor, ``keep=i`` the value that stage ``i - 1`` produced. The chain must have
    passed :func:`check_chain`."""
    value: Any = container.stream(entry.data)
    for rec in reversed(entry.chain[keep:]):
        blobs = {k: container.stream(span) for k, span in rec.blobs.items()}
        try:
            value = table[rec.stage].load()(value, rec.params, blobs, entry.meta)
        except DecodeError as e:
            raise ContainerError(f"tensor '{entry.meta.name}', stage '{rec.stage}': {e}") from None
    return value


def decode_container(container: Container, table: Mapping[str, DecoderSpec]) -> dict[str, torch.Tensor]:
    for entry in container.entries:  # every chain is checked before any stream is decoded
        check_chain(entry, table)
    out = {}
    for entry in container.entries:
        value = undo_stages(container, entry, table)
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != entry.meta.shape:
            raise ContainerError(f"tensor '{entry.meta.name}': decoded to the wrong shape")
        out[entry.meta.name] = value
    return out
