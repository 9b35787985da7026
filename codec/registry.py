"""Stage registry: the built-in stages plus third-party ones from the entry-point group
``golfpack.stages`` (each entry point names a :class:`~golfpack.codec.stage.Stage` subclass).

A plugin that fails to load does not take golfpack down: it is listed as broken (``golfpack
stages`` shows why) and only a pipeline that names it fails, with that reason.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Mapping

from .decoders.chain import DecoderSpec
from . import encoders
from .stage import Stage, StageError

ENTRY_POINT_GROUP = "golfpack.stages"


@dataclass(frozen=True)
class Registered:
    cls: type[Stage] | None  # None: a plugin that failed to load
    origin: str  # "builtin" or "plugin <distribution> (<entry point value>)"
    error: str = ""  # why a broken plugin failed to load


def _load_plugin(ep, found: Mapping[str, Registered]) -> Registered:
    dist = getattr(ep, "dist", None)
    origin = f"plugin {dist.name if dist else '?'} ({ep.value})"
    try:
        cls = ep.load()
    except Exception as e:  # any failure inside third-party code: recorded, not raised
        return Registered(None, origin, f"failed to load: {type(e).__name__}: {e}")
    if not (isinstance(cls, type) and issubclass(cls, Stage)):
        return Registered(None, origin, "is not a Stage subclass")
    if cls.name != ep.name:
        return Registered(None, origin, f"entry point '{ep.name}' names stage '{cls.name}'")
    if cls.name in found:
        return Registered(None, origin, f"clashes with {found[cls.name].origin}")
    return Registered(cls, origin)


def discover() -> dict[str, Registered]:
    found = {cls.name: Registered(cls, "builtin") for cls in encoders.BUILTIN}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        reg = _load_plugin(ep, found)
        found.setdefault(ep.name, reg)
    return found


def packed_registry(stages: Mapping[str, str]) -> dict[str, Registered]:
    """The stages a packed script carries (``name -> module:Class``, written by the packer from
    this golfpack's own classes), imported from its bundle: the only stages such a script
    knows (no entry points: nothing installed where it runs may join in)."""
    found = {}
    for name, ref in stages.items():
        module, _, cls = ref.partition(":")
        found[name] = Registered(getattr(importlib.import_module(module), cls), "packed")
    return found


def get_stage(name: str, registry: Mapping[str, Registered] | None = None) -> type[Stage]:
    registry = discover() if registry is None else registry
    if name not in registry:
        raise StageError(f"unknown stage '{name}' (known: {', '.join(sorted(registry))})")
    reg = registry[name]
    if reg.cls is None:
        raise StageError(f"stage '{name}' from {reg.origin} {reg.error}")
    return reg.cls


def decoder_table(registry: Mapping[str, Registered] | None = None) -> dict[str, DecoderSpec]:
    """Stage name -> its decoder, for every stage that loaded: the only table the host trusts."""
    registry = discover() if registry is None else registry
    return {n: r.cls.decoder() for n, r in registry.items() if r.cls is not None}
