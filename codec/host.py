"""The codec as the host has it, where golfpack is installed: pipelines by name or file
(``spec.py``), the installed stages' decoders (golfpack's and plugins', ``registry.py``), a
container decoded with them, and its per-tensor byte ledger, which ``golfpack inspect`` and the
benchmarks print. Build side: a shipped decoder gets its table from the artifact's manifest or
an inlined script's packed pipeline, never from what is installed (the API imports this module
by name, ``golfpack.HOST``, so ``golfpack inline`` never packs it)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch

from .decoders.base import SYMBOLS
from .decoders.chain import DecoderSpec, check_chain, decode_container, undo_stages
from .decoders.container import Container, Entry, read_container
from .entropy import order0_bits
from .registry import decoder_table
from .spec import load_spec

__all__ = ["TensorLedger", "decode_state_dict", "decoder_table", "ledger", "load_spec", "symbols_of"]


def decode_state_dict(data: bytes, table: Mapping[str, DecoderSpec] | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    container = read_container(data)
    return decode_container(container, decoder_table() if table is None else table), container.meta


@dataclass(frozen=True)
class TensorLedger:
    name: str
    shape: tuple[int, ...]
    params: int
    chain: str
    bytes: int
    entropy_bytes: float | None  # order-0 bound of the symbols (+ their side streams), for quantized tensors

    @property
    def bits_per_param(self) -> float:
        return 8 * self.bytes / max(self.params, 1)


def symbols_of(container: Container, entry: Entry, table: Mapping[str, DecoderSpec]) -> np.ndarray | None:
    """Undo the coding stages of ``entry`` down to its integer symbols (None if it has none)."""
    check_chain(entry, table)
    kinds = [table[r.stage].produces for r in entry.chain]
    if SYMBOLS not in kinds:
        return None
    return undo_stages(container, entry, table, keep=kinds.index(SYMBOLS) + 1)


LEDGER_PARAMS = ("bits", "cols", "lqer", "level", "width", "store")  # the stage params worth showing in a chain


def ledger(container: Container, table: Mapping[str, DecoderSpec] | None = None) -> list[TensorLedger]:
    """One row per tensor, computed one tensor at a time (each tensor's symbols are freed before
    the next is decoded, so the peak is one tensor's intermediates)."""
    table = decoder_table() if table is None else table
    rows = []
    for e in container.entries:
        nbytes = e.data.length + sum(s.length for r in e.chain for s in r.blobs.values())
        symbols = symbols_of(container, e, table)
        side = sum(s.length for r in e.chain for s in r.blobs.values() if table[r.stage].produces == SYMBOLS)
        entropy = None if symbols is None else order0_bits(np.asarray(symbols)) / 8 + side
        del symbols
        chain = " -> ".join(f"{r.stage}" + "".join(f" {k}={v}" for k, v in sorted(r.params.items())
                                                   if k in LEDGER_PARAMS) for r in e.chain)
        rows.append(TensorLedger(e.meta.name, e.meta.shape, e.meta.numel, chain, nbytes, entropy))
    return rows
