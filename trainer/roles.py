"""Each state-dict tensor's role for the codec's rules (``role = ...`` in a pipeline file), from
what ``model/anatomy.py`` learns of any ``nn.Module``.

Why here: the role vocabulary is the codec's (``codec/decoders/config.py: ROLES``) and the
anatomy is the model's, and neither may import the other; the trainer may import both, and is
where the two meet (the public API, ``build`` and the trainer's own embedding rate and QAT
planner all ask this one function).
"""
from __future__ import annotations

from torch import nn

from ..codec.decoders.config import EMBEDDING, MATRIX, SMALL
from ..model.anatomy import Kind, parameter_kinds, probe_output_layers


def tensor_roles(model: nn.Module) -> dict[str, str]:
    """The embedding and the output layer are ``embedding`` (the output layer found by
    ``probe_output_layers``, so a model that does not call it ``lm_head`` is placed right too),
    every other Muon weight (2+ dimensions, not a named scale or gain) ``matrix``, the rest
    ``small``: so a pipeline fits a model whose names it has never seen. Why no size line: a
    matrix of any size is quantized and allocated like the others (the fill chooses its bits),
    which is what golfpack's own GPT always got."""
    kinds = parameter_kinds(model)
    heads = set(probe_output_layers(model).heads)
    roles = {}
    for name, t in model.state_dict().items():
        kind = kinds.get(name, Kind.CONTROL)
        if kind in (Kind.EMBEDDING, Kind.HEAD) or name in heads:
            roles[name] = EMBEDDING
        elif t.ndim >= 2 and kind is Kind.HIDDEN:
            roles[name] = MATRIX
        else:
            roles[name] = SMALL
    return roles
