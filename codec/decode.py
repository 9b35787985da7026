"""Container -> tensors, through a trusted table of stage decoders.

The table maps a stage name to its decoder's import target and kinds; it comes from golfpack's
registry (in-process) or from the artifact's own list of shipped decoders, never from the
container. Chains are type-checked against the table before any stream is decoded.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Mapping

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


def decode_entry(container: Container, entry: Entry, table: Mapping[str, DecoderSpec]) -> torch.Tensor:
    check_chain(entry, table)
    value = container.stream(entry.data)
    for rec in reversed(entry.chain):
        blobs = {k: container.stream(span) for k, span in rec.blobs.items()}
        try:
            value = table[rec.stage].load()(value, rec.params, blobs, entry.meta)
        except DecodeError as e:
            raise ContainerError(f"tensor '{entry.meta.name}', stage '{rec.stage}': {e}") from None
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != entry.meta.shape:
        raise ContainerError(f"tensor '{entry.meta.name}': decoded to the wrong shape")
    return value


def decode_container(container: Container, table: Mapping[str, DecoderSpec]) -> dict[str, torch.Tensor]:
    for entry in container.entries:
        check_chain(entry, table)
    return {e.meta.name: decode_entry(container, e, table) for e in container.entries}
