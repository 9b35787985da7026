"""Each state-dict tensor's role for the codec's rules (``role = ...`` in a pipeline file), from
what ``model/anatomy.py`` learns of any ``nn.Module``.

Why here: the role vocabulary is the codec's (``codec/decoders/config.py: ROLES``) and the
anatomy is the model's, and neither may import the other; the trainer may import both, and is
where the two meet (the public API, ``build`` and the trainer's own embedding rate and QAT
planner all ask this one function).
"""
from __future__ import annotations

from torch import nn

from ..codec.decoders.config import BUFFER, EMBEDDING, MATRIX, SMALL
from ..model.anatomy import Kind, parameter_kinds, probe_output_layers


def tensor_roles(model: nn.Module) -> dict[str, str]:
    """The embedding and the output layer are ``embedding`` (the output layer found by
    ``probe_output_layers``, so a model that does not call it ``lm_head`` is placed right too),
    every other Muon weight (2-D, not a named scale or gain: ``Kind.HIDDEN``) ``matrix``, a buffer
    (state that is not a parameter: a mask, a step counter, rotary frequencies) ``buffer``, the
    rest (a convolution's 3-D weight too: GPTQ and the fill take 2-D weights only) ``small``: so a
    pipeline fits a model whose names it has never seen. Why no size line: a matrix of any size
    is quantized and allocated like the others (the fill chooses its bits), which is what
    golfpack's own GPT always got. Why buffers apart: nothing measures what their
    error costs, and they may be integers, so the default stores them exactly."""
    kinds = parameter_kinds(model)
    heads = set(probe_output_layers(model).heads)
    buffers = {name for name, _ in model.named_buffers(remove_duplicate=False)}
    roles = {}
    for name, t in model.state_dict().items():
        kind = kinds.get(name, Kind.CONTROL)
        if name in buffers:
            roles[name] = BUFFER
        elif kind in (Kind.EMBEDDING, Kind.HEAD) or name in heads:
            roles[name] = EMBEDDING
        elif t.ndim >= 2 and kind is Kind.HIDDEN:
            roles[name] = MATRIX
        else:
            roles[name] = SMALL
    return roles
