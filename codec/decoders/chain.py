"""Container -> tensors, through a trusted table of stage decoders.

The table maps a stage name to its decoder module and kinds. On the host it is built from
golfpack's own registry; inside an artifact from the artifact's manifest, whose every module
must be one the artifact ships (``packer.runtime.bootstrap``). It never comes from the container. Chains
are type-checked against the table before any stream is decoded.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from .base import BYTES, TENSOR, DecodeError, TensorMeta
from .container import ALIASES_KEY, Container, ContainerError, Entry

DECODE_FUNCTION = "decode"  # every decoder module exposes decode(value, params, blobs, meta)
STEPS_FUNCTION = "steps"  # and may expose steps(params, meta): its Python-level work (default 1)
MAX_DECODE_STEPS = 1 << 16  # Python-level steps one container may ask of its decoders (~1 s at ctxans' pace)


@dataclass(frozen=True)
class DecoderSpec:
    module: str  # "package.decoders.name": the decode half of the stage whose encoder is in "package.encoders.name"
    consumes: str
    produces: str

    def load(self) -> Callable:
        return getattr(importlib.import_module(self.module), DECODE_FUNCTION)

    def steps(self, params: dict, meta: TensorMeta) -> int:
        """Python-level steps (calls, loop iterations) the decoder will take: most decoders are
        vectorised (one step); one that loops over columns says so, and a container cannot ask
        for more work than ``MAX_DECODE_STEPS`` before any stream is decoded."""
        fn = getattr(importlib.import_module(self.module), STEPS_FUNCTION, None)
        return 1 if fn is None else int(fn(params, meta))

    def to_json(self) -> list[str]:
        return [self.module, self.consumes, self.produces]


def chain_mismatch(kinds: Sequence[tuple[str, str]]) -> tuple[int, str] | None:
    """The one chain rule: from a tensor, each stage consumes what the previous produced, and
    the chain ends in bytes. ``kinds`` is ``(consumes, produces)`` per stage; returns ``None``
    or ``(i, kind)``: stage ``i`` gets ``kind`` (``i == len(kinds)``: the chain ends in ``kind``)."""
    kind = TENSOR
    for i, (consumes, produces) in enumerate(kinds):
        if consumes != kind:
            return i, kind
        kind = produces
    return None if kind == BYTES else (len(kinds), kind)


def check_chain(entry: Entry, table: Mapping[str, DecoderSpec]) -> None:
    name = entry.meta.name
    for rec in entry.chain:
        if rec.stage not in table:
            raise ContainerError(f"tensor '{name}': no decoder for stage '{rec.stage}'")
    kinds = [(table[r.stage].consumes, table[r.stage].produces) for r in entry.chain]
    bad = chain_mismatch(kinds)
    if bad is not None:
        i, kind = bad
        if i == len(kinds):
            raise ContainerError(f"tensor '{name}': chain ends in {kind}, not bytes")
        raise ContainerError(f"tensor '{name}': stage '{entry.chain[i].stage}' consumes {kinds[i][0]}, gets {kind}")


def check_container(container: Container, table: Mapping[str, DecoderSpec]) -> None:
    """Every chain type-checks against ``table``, and the decoders' work is bounded: a
    container is refused here, before any stream is decoded."""
    steps = 0
    for entry in container.entries:
        check_chain(entry, table)
        for rec in entry.chain:
            try:
                steps += table[rec.stage].steps(rec.params, entry.meta)
            except DecodeError as e:
                raise ContainerError(f"tensor '{entry.meta.name}', stage '{rec.stage}': {e}") from None
        if steps > MAX_DECODE_STEPS:
            raise ContainerError(f"decoding would take more than {MAX_DECODE_STEPS:,} steps (refused before decoding; "
                                 f"tensor '{entry.meta.name}' passes the bound)")


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
    check_container(container, table)  # every chain and the total work, before any stream is decoded
    out = {}
    for entry in container.entries:
        value = undo_stages(container, entry, table)
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != entry.meta.shape:
            raise ContainerError(f"tensor '{entry.meta.name}': decoded to the wrong shape")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ContainerError(f"tensor '{entry.meta.name}': decodes to inf or NaN (refused: weights are finite)")
        out[entry.meta.name] = value
    for alias, name in container.meta.get(ALIASES_KEY, {}).items():  # checked by read_container
        out[alias] = out[name]
    return out
