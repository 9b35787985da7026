"""Which module builds the model: golfpack's GPT or the user's own, named ``module:function``.

A model builder is a function ``build(config: dict) -> torch.nn.Module`` whose module has

* ``forward(input_ids, target_ids)``: the mean token cross-entropy (what training minimises);
* ``logits(input_ids)``: ``(batch, seq, vocab)`` logits (what exact val_bpb scoring reads);
* ``vocab_size``: an int attribute (which shards and tokenizers it fits);

and a module may set ``DEFAULT_CONFIG`` (a dict) for the keys a run does not set. golfpack
trains, calibrates, codes, ships and scores any such module: the builder's name and its config
travel in every checkpoint, container and records script, and the module's source ships in
the bundle, so an artifact rebuilds the model where golfpack is not installed.

A user's file (``path/to/model.py:build``) is imported as the module its stem names
(:func:`load_module_file`); entry points are the build side's business (``packer.models``).
"""
from __future__ import annotations

import importlib
import importlib.util
import keyword
import re
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .config import GPTConfig
from .gpt import is_control

GPT_BUILDER = "golfpack.model.gpt:build"
BUILDER = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
MATRIX_MIN_ELEMENTS = 65_536  # the records' line: smaller tensors are "small" (stored near float)


class _Name(str, Enum):
    """A vocabulary word: compares, hashes, prints and serializes as its value (``StrEnum``,
    which Python 3.10 lacks)."""

    __str__ = str.__str__
    __format__ = str.__format__


class Role(_Name):
    """What a state-dict tensor is to the codec's rules (``role = ...`` in a pipeline file; the
    codec, which imports nothing of the model, spells the same values in ``codec.spec.ROLES``,
    and a test holds them equal)."""

    MATRIX = "matrix"  # a weight of 2+ dimensions with at least MATRIX_MIN_ELEMENTS values
    EMBEDDING = "embedding"  # the token embedding or the output head
    SMALL = "small"  # the rest: vectors, scales, gains, small matrices


class Kind(_Name):
    """A parameter's part in training: which optimizer and learning rate it gets."""

    EMBEDDING = "embedding"  # an nn.Embedding: Adam at the (tied) embedding rate
    HEAD = "head"  # the untied output layer: Adam at the head rate
    HIDDEN = "hidden"  # any other 2-D weight: Muon
    CONTROL = "control"  # vectors, scalars and the named scales and gains: Adam at the scalar rate


class ModelBuilderError(ValueError):
    """A model builder cannot be found, or what it built breaks the model contract."""


def load_module_file(path: str | Path) -> str:
    """Import ``path`` as the top-level module named by its stem; returns that name. A stem that
    would shadow another module (the standard library, an installed package) is refused."""
    path = Path(path)
    name = path.stem
    if not path.is_file():
        raise ModelBuilderError(f"{path}: no such model file")
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ModelBuilderError(f"{path}: the file name must be a Python identifier (it becomes the module name)")
    loaded = sys.modules.get(name)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve() == path.resolve():
            return name
        raise ModelBuilderError(f"{path}: module name '{name}' is taken by {getattr(loaded, '__file__', 'a module')}; "
                                "rename the file")
    found = None if name in sys.stdlib_module_names else importlib.util.find_spec(name)
    if found is not None and found.origin and Path(found.origin).resolve() == path.resolve():
        importlib.import_module(name)  # the file is importable as itself (it is on sys.path)
        return name
    if name in sys.stdlib_module_names or found is not None:
        raise ModelBuilderError(f"{path}: module name '{name}' would shadow an existing module; rename the file")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the user's code: any failure becomes one line
        del sys.modules[name]
        raise ModelBuilderError(f"{path}: failed to import ({type(e).__name__}: {e})") from None
    return name


def split_builder(ref: str) -> tuple[str, str]:
    if not isinstance(ref, str) or not BUILDER.fullmatch(ref):
        raise ModelBuilderError(f"model builder must be 'module:function', got {ref!r}")
    module, _, function = ref.partition(":")
    return module, function


def builder_module(ref: str) -> str:
    return split_builder(ref)[0]


def _import(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ModelBuilderError(f"cannot import model module '{module}' ({e}); pass --model PATH.py:function "
                                "or install the package that provides it") from None


def load_builder(ref: str) -> Callable[[dict], nn.Module]:
    module, function = split_builder(ref)
    fn = getattr(_import(module), function, None)
    if not callable(fn):
        raise ModelBuilderError(f"model module '{module}' has no function '{function}'")
    return fn


def default_config(ref: str) -> dict[str, Any]:
    """The builder's defaults: its module's ``DEFAULT_CONFIG`` (GPT: the challenge baseline)."""
    return dict(getattr(_import(builder_module(ref)), "DEFAULT_CONFIG", {}))


def config_numel(ref: str, config: Mapping[str, Any]) -> int | None:
    """The state-dict elements ``config`` describes, found without allocating them: by
    arithmetic for golfpack's GPT, by building on PyTorch's ``meta`` device (shapes, no
    storage) for another builder; None when that builder cannot build on ``meta``."""
    if ref == GPT_BUILDER:
        return GPTConfig.from_dict(config).num_parameters
    try:
        with torch.device("meta"):
            model = load_builder(ref)(dict(config))
        return sum(t.numel() for t in model.state_dict().values())
    except ModelBuilderError:
        raise
    except Exception:  # the user's builder may not support the meta device; it is trusted code
        return None


def build_model(ref: str, config: Mapping[str, Any], numel: int | None = None) -> nn.Module:
    """Build and check the contract, so a broken plugin fails here with its name, not mid-run.

    ``numel``: the elements of the weights that will be loaded. A config comes from a file, and
    a 171-byte file can ask for a thousand layers: the size it describes is compared with the
    weights' before the model is allocated."""
    if numel is not None:
        described = config_numel(ref, config)
        if described is not None and described != numel:
            raise ModelBuilderError(f"the weights do not fit the model: its config describes {described:,} parameters, "
                                    f"the weights hold {numel:,} (refused before building it)")
    model = load_builder(ref)(dict(config))
    if not isinstance(model, nn.Module):
        raise ModelBuilderError(f"model builder '{ref}' returned {type(model).__name__}, not a torch.nn.Module")
    missing = [a for a in ("forward", "logits", "vocab_size") if not hasattr(model, a)]
    if missing or not isinstance(getattr(model, "vocab_size", None), int):
        raise ModelBuilderError(f"model from '{ref}' lacks {missing or ['an int vocab_size']} "
                                "(see docs/models.md for the contract)")
    return model


def model_meta(ref: str, config: Mapping[str, Any], rule_by_role: Mapping[str, int]) -> dict[str, Any]:
    """What a container's meta records of its model: builder and config, for the artifact to
    rebuild it, and the rules its tensors' roles chose (``PipelineSpec.chosen_by_role``), for
    ``inspect`` to group them; only when there are any."""
    return {"model_builder": ref, "model_config": dict(config)} | ({"rule_by_role": dict(rule_by_role)}
                                                                    if rule_by_role else {})


def builder_of(meta: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(builder, config)`` from a container's meta (no builder: golfpack's GPT, as before
    builders existed)."""
    ref, config = meta.get("model_builder", GPT_BUILDER), meta.get("model_config")
    split_builder(ref)
    if not isinstance(config, dict):
        raise ModelBuilderError("the container's meta has no model_config table")
    return ref, config


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """``load_state_dict(strict=True)``, with torch's long complaint cut to its first line."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = str(e).strip().splitlines()
        raise ModelBuilderError(f"{source}: state dict does not fit the model: "
                                f"{lines[1].strip() if len(lines) > 1 else lines[0]}") from None
    return model


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
        self.derived: dict[int, str] = {}  # casts and transposes of a weight, alive during this forward
        self.seen = seen

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        named = [(a, self.names.get(id(a)) or self.derived.get(id(a))) for a in tensors]
        hits = [(a, n) for a, n in named if n is not None]
        if not hits:
            return out
        name = hits[0][1]
        if func in _MATMULS:
            hidden = [a for a, n in named if n is None and a.is_floating_point()]
            if hidden:
                self.seen(name, hidden[0])
        elif isinstance(out, torch.Tensor) and args and args[0] is hits[0][0] and out.numel() == hits[0][0].numel():
            self.derived[id(out)] = name  # w.to(dtype), w.T, w.t(): still the embedding
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
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
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


def tensor_roles(model: nn.Module) -> dict[str, Role]:
    """Each state-dict tensor's :class:`Role` for the codec's rules: the embedding and the
    output layer are ``embedding`` (the output layer found by :func:`probe_output_layers`, so
    a model that does not call it ``lm_head`` is placed right too), other Muon weights of at
    least ``MATRIX_MIN_ELEMENTS`` values ``matrix``, the rest ``small``; so a pipeline fits a
    model whose names it has never seen."""
    kinds = parameter_kinds(model)
    heads = set(probe_output_layers(model).heads)
    roles = {}
    for name, t in model.state_dict().items():
        kind = kinds.get(name, Kind.CONTROL)
        if kind in (Kind.EMBEDDING, Kind.HEAD) or name in heads:
            roles[name] = Role.EMBEDDING
        elif t.ndim >= 2 and t.numel() >= MATRIX_MIN_ELEMENTS and kind is Kind.HIDDEN:
            roles[name] = Role.MATRIX
        else:
            roles[name] = Role.SMALL
    return roles
