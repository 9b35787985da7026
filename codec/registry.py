"""Stage registry: the built-in stages plus third-party ones from the entry-point group
``golfpack.stages`` (each entry point names a :class:`~golfpack.codec.stage.Stage` subclass)."""
from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Mapping

from .decode import DecoderSpec
from .stage import Stage, StageError
from .stages import BUILTIN

ENTRY_POINT_GROUP = "golfpack.stages"


@dataclass(frozen=True)
class Registered:
    cls: type[Stage]
    origin: str  # "builtin" or "plugin <distribution> (<entry point value>)"


def discover() -> dict[str, Registered]:
    found = {cls.name: Registered(cls, "builtin") for cls in BUILTIN}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            cls = ep.load()
        except Exception as e:  # a broken plugin must not take golfpack down
            raise StageError(f"plugin stage '{ep.name}' ({ep.value}) failed to load: {e}") from None
        if not (isinstance(cls, type) and issubclass(cls, Stage)):
            raise StageError(f"plugin entry point '{ep.name}' ({ep.value}) is not a Stage subclass")
        if cls.name in found:
            raise StageError(f"plugin stage '{cls.name}' ({ep.value}) clashes with {found[cls.name].origin}")
        dist = getattr(ep, "dist", None)
        found[cls.name] = Registered(cls, f"plugin {dist.name if dist else '?'} ({ep.value})")
    return found


def get_stage(name: str, registry: Mapping[str, Registered] | None = None) -> type[Stage]:
    registry = discover() if registry is None else registry
    if name not in registry:
        raise StageError(f"unknown stage '{name}' (known: {', '.join(sorted(registry))})")
    return registry[name].cls


def decoder_table(registry: Mapping[str, Registered] | None = None) -> dict[str, DecoderSpec]:
    registry = discover() if registry is None else registry
    return {n: DecoderSpec(r.cls.decoder, r.cls.consumes, r.cls.produces) for n, r in registry.items()}
