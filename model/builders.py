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
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .anatomy import ModelBuilderError
from .config import GPTConfig

GPT_BUILDER = "golfpack.model.gpt:build"
BUILDER = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


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


def model_meta(ref: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """What a container's meta records of its model: builder and config, for the artifact to
    rebuild it. (``compress`` adds the rules its tensors' roles chose: ``codec/rules.py:
    RULE_BY_ROLE_KEY``.)"""
    return {"model_builder": ref, "model_config": dict(config)}


def builder_of(meta: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(builder, config)`` from a container's meta (no builder: golfpack's GPT, as before
    builders existed)."""
    ref, config = meta.get("model_builder", GPT_BUILDER), meta.get("model_config")
    split_builder(ref)
    if not isinstance(config, dict):
        raise ModelBuilderError("the container's meta has no model_config table")
    return ref, config
