"""What golfpack learns from any ``nn.Module``, with no builder and no naming convention: each
parameter's kind (which optimizer trains it), the output layers (a tied embedding, or an
untied head), and strict weight loading. (Each tensor's role for the codec's rules is built on
these in ``trainer/roles.py``.)

Imports nothing of golfpack: the public API (``golfpack.compress``) and an inlined records
script need these, and not the GPT or the builders.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Mapping

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

# Small/control parameters that stay fp32 and are optimised by Adam, as in the challenge.
CONTROL_TENSOR_NAME_PATTERNS = (
    "attn_scale", "attn_scales", "mlp_scale", "mlp_scales", "resid_mix", "resid_mixes",
    "q_gain", "skip_weight", "skip_weights",
)


def is_control(name: str, tensor: torch.Tensor) -> bool:
    """The challenge's rule for small/control parameters: vectors and scalars, or a name that
    says it is a scale, mix, gain or skip weight."""
    return tensor.ndim < 2 or any(s in name for s in CONTROL_TENSOR_NAME_PATTERNS)


class Kind(str, Enum):
    """A parameter's part in training: which optimizer and learning rate it gets. (Compares,
    prints and serializes as its value: ``StrEnum``, which Python 3.10 lacks.)"""

    __str__ = str.__str__
    __format__ = str.__format__

    EMBEDDING = "embedding"  # an nn.Embedding: Adam at the (tied) embedding rate
    HEAD = "head"  # the untied output layer: Adam at the head rate
    HIDDEN = "hidden"  # any other 2-D weight: Muon
    CONTROL = "control"  # vectors, scalars and the named scales and gains: Adam at the scalar rate


class ModelBuilderError(ValueError):
    """A model builder cannot be found, or what it built breaks the model contract."""


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """``load_state_dict(strict=True)``, with torch's complaint on one line: its missing,
    unexpected and mis-shaped keys each summed up (a renamed key shows as both), names cut short."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines()]
        found = [ln if len(ln) <= 300 else ln[:297] + "..." for ln in lines[1:4] if ln] or lines[:1]
        raise ModelBuilderError(f"{source}: state dict does not fit the model: {'; '.join(found)}") from None
    return model


def unwrapped(model: nn.Module) -> nn.Module:
    """The module a wrapper runs, however deep: ``torch.compile``'s (``_orig_mod``), DDP's or
    DataParallel's (``module``). Why: a training script holds its model wrapped, and the
    wrappers rename every tensor (``_orig_mod.``, ``module.``) and recompile on hooks; the file
    must name the tensors as the plain model does, which is what loads it again."""
    while True:
        if type(model).__name__ == "OptimizedModule":  # by name: importing torch._dynamo costs seconds
            inner = getattr(model, "_orig_mod", None)
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            inner = model.module
        else:
            return model
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters live (the CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def tied_embeddings(model: nn.Module) -> list[str]:
    """Names of the embedding weights that are also the output layer: all of them in a model
    that declares ``lm_head = None`` (the GPT's convention, docs/models.md), none otherwise."""
    if getattr(model, "lm_head", 0) is not None:
        return []
    return [f"{name}.weight" for name, m in model.named_modules() if isinstance(m, nn.Embedding)]


_MATMULS = {torch.nn.functional.linear, torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.mm,
            torch.Tensor.mm, torch.bmm, torch.einsum}


class EmbeddingOutputs(TorchFunctionMode):
    """While active, calls ``seen(name, hidden)`` each time an embedding's weight (or a cast or
    transpose of it) multiplies hidden states, i.e. serves as the output layer, however the
    model spells it (``F.linear(h, emb.weight)``, ``h @ emb.weight.T``). Why a function mode:
    a tied head is a function call on a parameter, not a module a hook can see, and a model
    golfpack has never seen follows no naming convention."""

    def __init__(self, model: nn.Module, seen: Callable[[str, torch.Tensor], None]) -> None:
        super().__init__()
        self.names = {id(m.weight): f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Embedding)}
        self.derived: dict[int, tuple[weakref.ref, str]] = {}  # casts and transposes of a weight (w.to, w.T)
        self.seen = seen

    def _name(self, t: torch.Tensor) -> str | None:
        """The embedding ``t`` is, or a cast or transpose of; a freed cast's id can be reused by
        any later tensor, so a derived tensor counts only while its weak reference is ``t``."""
        derived = self.derived.get(id(t))
        return self.names.get(id(t)) or (derived[1] if derived is not None and derived[0]() is t else None)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        named = [(a, self._name(a)) for a in tensors]
        hits = [(a, n) for a, n in named if n is not None]
        if not hits:
            return out
        name = hits[0][1]
        if func in _MATMULS:
            hidden = [a for a, n in named if n is None and a.is_floating_point()]
            if hidden:
                self.seen(name, hidden[0])
        elif isinstance(out, torch.Tensor) and args and args[0] is hits[0][0] and out.numel() == hits[0][0].numel():
            self.derived[id(out)] = (weakref.ref(out), name)  # w.to(dtype), w.T, w.t(): still the embedding
        return out


@dataclass(frozen=True)
class OutputLayers:
    """Which weights make the logits: embeddings that also serve as the output layer (tied) and
    separate output layers (untied heads)."""

    tied: tuple[str, ...] = ()
    heads: tuple[str, ...] = ()


def probe_output_layers(model: nn.Module, seq_len: int = 8) -> OutputLayers:
    """The output layers of a model golfpack may never have seen, found by running it once on
    ``seq_len`` tokens of id 0: an embedding whose weight multiplies hidden states is tied;
    otherwise the last ``nn.Linear`` to run is the untied head if its width is the
    vocabulary's (``vocab_size``, or the largest embedding's rows). Why the last to run and not
    any that wide: an MLP can be as wide as the vocabulary. A model declaring ``lm_head``
    (golfpack's convention) is taken at its word, without a run. A model the probe cannot run
    answers with no output layers: every weight is then placed by shape alone."""
    if hasattr(model, "lm_head"):
        head = model.lm_head
        heads = (tuple(f"{n}.weight" for n, m in model.named_modules() if m is head and isinstance(m, nn.Linear))
                 if isinstance(head, nn.Module) else ())
        return OutputLayers(tuple(tied_embeddings(model)), heads)
    widths = [m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)]
    vocab = getattr(model, "vocab_size", None)
    vocab = vocab if isinstance(vocab, int) else max(widths, default=0)
    linears = {id(m): f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    tied: list[str] = []
    ran: list[nn.Linear] = []
    hooks = [m.register_forward_hook(lambda mod, a, o: ran.append(mod)) for m in model.modules()
             if isinstance(m, nn.Linear)]
    device = model_device(model)
    x = torch.zeros(1, seq_len, dtype=torch.int64, device=device)
    was_training = model.training
    try:
        with torch.no_grad(), EmbeddingOutputs(model, lambda name, h: tied.append(name)):
            model.eval()(x, x)
    except Exception:  # the user's model, run on a guess of its input: not knowing is an answer
        return OutputLayers()
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    if tied:
        return OutputLayers(tuple(dict.fromkeys(tied)))
    return OutputLayers(heads=(linears[id(ran[-1])],) if ran and ran[-1].out_features == vocab else ())


def parameter_kinds(model: nn.Module) -> dict[str, Kind]:
    """Each parameter's :class:`Kind`: an ``nn.Embedding``'s, the untied output layer's (by
    convention ``model.lm_head``), other 2-D weights (Muon), or control (the challenge's named
    scales and gains among them)."""
    head = getattr(model, "lm_head", None)
    head_params = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
    embedding_params = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    kinds = {}
    for name, p in model.named_parameters():
        if id(p) in embedding_params:
            kinds[name] = Kind.EMBEDDING
        elif id(p) in head_params:
            kinds[name] = Kind.HEAD
        elif p.ndim == 2 and not is_control(name, p):
            kinds[name] = Kind.HIDDEN
        else:
            kinds[name] = Kind.CONTROL
    return kinds
