"""State dict -> container bytes: each tensor through its rule's chain of stages. (Decoding
with the installed stages, and the per-tensor ledger, are ``host.py``.)"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch

from .decoders.base import DTYPES, FLOAT_WIDTH, MAX_NAME_CHARS, TensorMeta
from .decoders.container import write_container
from .rules import PipelineSpec
from .stage import EncodeContext, Stage, StageError


def tensor_meta(name: str, tensor: torch.Tensor) -> TensorMeta:
    dtype = str(tensor.dtype).removeprefix("torch.")
    if dtype not in DTYPES:
        raise StageError(f"tensor '{name}' has dtype {tensor.dtype}; only {', '.join(DTYPES)} are supported")
    if not (0 < len(name) <= MAX_NAME_CHARS and name.isprintable()):
        raise StageError(f"tensor name {name[:80]!r} must be 1..{MAX_NAME_CHARS} printable characters")
    return TensorMeta(name, dtype, tuple(tensor.shape))


Record = tuple[TensorMeta, list[tuple[str, dict, dict[str, bytes]]], bytes]  # what write_container takes


def encode_tensor(name: str, tensor: torch.Tensor, stages: Sequence[Stage], hessian: torch.Tensor | None,
                  sensitivity: torch.Tensor | None = None) -> Record:
    """One tensor through one chain: its description, each stage's params and side streams, its data."""
    tmeta = tensor_meta(name, tensor)
    if tmeta.dtype not in FLOAT_WIDTH and not (stages and stages[0].any_dtype):
        raise StageError(f"tensor '{name}' is {tmeta.dtype}: only a stage that stores any dtype exactly codes it "
                         "(its rule's chain must start with raw; the default pipeline's 'buffers' rule does)")
    ctx = EncodeContext(tmeta, hessian, sensitivity)
    value: Any = tensor.detach().cpu().contiguous()
    chain = []
    for stage in stages:
        out = stage.encode(value, ctx)
        chain.append((stage.name, out.params, out.blobs))
        value = out.value
    return tmeta, chain, bytes(value)


def complete_hessians(state_dict: Mapping[str, torch.Tensor], spec: PipelineSpec,
                      hessians: Mapping[str, torch.Tensor] | None,
                      log: Callable[[str], None]) -> dict[str, torch.Tensor] | None:
    """Calibration for every matrix a calibrating stage will see. One the calibration pass did not
    reach (an input its hooks cannot see, such as a user model's own output layer) gets the
    identity, with which GPTQ is round-to-nearest, and ``log`` says so. Without any calibration
    nothing is filled in: the stage reports that."""
    if not hessians:
        return None
    out, missing = dict(hessians), []
    for name, t in state_dict.items():
        if name not in out and t.ndim == 2 and any(s.needs_calibration for s in spec.rule_for(name).stages):
            out[name] = torch.eye(t.shape[1])
            missing.append(name)
    if missing:
        log(f"calibration: none for {', '.join(missing)}; identity Hessian (GPTQ as round-to-nearest)")
    return out


def shared_tensors(state_dict: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Names whose tensor is an earlier name's own (the same storage, offset, shape and strides:
    a head tied to the embedding by sharing its parameter), alias -> that name: a container codes
    it once and records the alias (``decoders/container.py: ALIASES_KEY``)."""
    first: dict[tuple, str] = {}
    aliases = {}
    for name, t in state_dict.items():
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if key in first:
            aliases[name] = first[key]
        else:
            first[key] = name
    return aliases


def record_bytes(record: Record) -> int:
    """The stream bytes a record adds to a container (data and side streams)."""
    return len(record[2]) + sum(len(b) for _, _, blobs in record[1] for b in blobs.values())


def encode_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    spec: PipelineSpec,
    hessians: Mapping[str, torch.Tensor] | None = None,
    meta: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> bytes:
    """Encode every tensor with the chain of the first matching rule; deterministic."""
    records = []
    for name, tensor in state_dict.items():
        records.append(encode_tensor(name, tensor, spec.rule_for(name).stages, (hessians or {}).get(name)))
        if progress is not None:
            progress(name)
    return write_container(records, meta or {})
