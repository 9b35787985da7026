"""Which tensors a fill allocates (bits, clip, correction chosen per tensor), the rest encoded
as their rules say, and the decoders a container of either may need: shared by ``fill.py``,
budget-aware QAT's planner (``qat_plan.py``) and the build."""
from __future__ import annotations

from typing import Iterable, Mapping

import torch

from .allocate import sensitivities_for
from .decoders.chain import DecoderSpec
from .encoders.intq import RTN, QuantParams
from .pipeline import Record, encode_tensor
from .rules import PipelineSpec, Rule


def allocates(rule: Rule) -> bool:
    """Whether the fill chooses the grid of tensors under ``rule``: it allows it, and its chain
    starts with a per-row grid quantizer."""
    return rule.allocate and isinstance(rule.stages[0].params, QuantParams)


def allocatable(spec: PipelineSpec, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    return [n for n, t in state_dict.items() if t.ndim == 2 and t.numel() > 0 and allocates(spec.rule_for(n))]


def split_tensors(spec: PipelineSpec, state_dict: Mapping[str, torch.Tensor], hessians: Mapping[str, torch.Tensor],
                  sensitivity: Mapping[str, torch.Tensor]) -> tuple[list[str], dict[str, Record], dict[str, torch.Tensor]]:
    """The allocatable tensors' names, every other tensor encoded as its rule says, and the
    sensitivities of the allocatable ones (``allocate.sensitivities_for``)."""
    names = allocatable(spec, state_dict)
    fixed = {n: encode_tensor(n, t, spec.rule_for(n).stages, hessians.get(n))
             for n, t in state_dict.items() if n not in names}
    return names, fixed, sensitivities_for(sensitivity, state_dict, names)


def used_decoders(spec: PipelineSpec, names: Iterable[str]) -> dict[str, DecoderSpec]:
    """The decoders of the stages ``spec`` (roles resolved) codes ``names`` with, and of those a
    fill may use beyond them: round-to-nearest on the grid of any allocatable rule
    (:meth:`fill.Filler.encoded`, the ``qat`` contender; the same decoder as ``gptq``'s). Each stage
    names its own decoder, so no registry is consulted: a records script's packed stages suffice."""
    names = list(names)
    stages = {type(s) for n in names for s in spec.rule_for(n).stages}
    if any(allocates(spec.rule_for(n)) for n in names):
        stages.add(RTN)
    return {cls.name: cls.decoder() for cls in sorted(stages, key=lambda c: c.name)}
