"""A pipeline as the encoder uses it: ordered rules, each a set of tensors (by name glob or by
role) and the chain of stage objects that codes them; and its packed form, the one a script
``golfpack inline`` wrote carries.

Parsing a pipeline (TOML files, chain text, the registry of installed stages and plugins) is
build-side work (``spec.py``). What runs inside an inlined script is only this module: the
packed form names each stage class by ``module:Class`` and gives its parameters already typed,
so rebuilding the pipeline there needs no parser, no registry and no entry points (nothing
installed where the script runs may join in), and imports only the script's own bundle.
The packed module's strict reader, for a copy someone else hands over, is ``golfpack check``'s
(``packer/records/check_inline.py``): it ships in no script.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field, replace
from typing import Mapping

from .decoders.config import first_match
from .decoders.chain import DecoderSpec
from .stage import Stage, StageError

ROLE_PREFIX = "role:"
RULE_BY_ROLE_KEY = "rule_by_role"  # the container meta's record of PipelineSpec.chosen_by_role, for inspect


@dataclass(frozen=True)
class Rule:
    patterns: tuple[str, ...]
    stages: tuple[Stage, ...]
    name: str = ""
    allocate: bool = True  # --fill may choose this rule's grid (when it starts with a grid quantizer)
    roles: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return self.name or (self.patterns[0] if self.patterns else ROLE_PREFIX + self.roles[0])

    def matches(self, name: str, role: str | None) -> bool:
        return role in self.roles or first_match(name, [self.patterns]) is not None

    @property
    def chain(self) -> str:
        return " -> ".join(s.describe() for s in self.stages)


@dataclass(frozen=True)
class PipelineSpec:
    rules: tuple[Rule, ...]
    source: str
    fill: bool = False  # the spec asks build to fill the budget
    roles: Mapping[str, str] = field(default_factory=dict, compare=False)  # tensor name -> role, for `role` rules

    def with_roles(self, roles: Mapping[str, str]) -> "PipelineSpec":
        """This spec, bound to one model's tensor roles (``trainer.roles.tensor_roles``)."""
        return replace(self, roles=dict(roles))

    def rule_index(self, name: str, role: str | None = None) -> int:
        """Index of the first rule whose globs match ``name`` or whose roles include its role
        (``role``, or the one the spec is bound to)."""
        role = self.roles.get(name) if role is None else role
        for i, rule in enumerate(self.rules):
            if rule.matches(name, role):
                return i
        raise StageError(f"pipeline {self.source}: no rule matches tensor '{name}' (add a final '*' rule)")

    def rule_for(self, name: str, role: str | None = None) -> Rule:
        return self.rules[self.rule_index(name, role)]

    def chosen_by_role(self, names: list[str]) -> dict[str, int]:  # a container's meta, under RULE_BY_ROLE_KEY
        """Tensors whose rule a role chose (its globs do not match the name), with that rule's
        index: all a container's meta needs for ``inspect`` to group them (it sees names, not
        roles), and empty for a model whose names the globs know."""
        chosen = {name: self.rule_index(name) for name in names}
        return {name: i for name, i in chosen.items() if first_match(name, [self.rules[i].patterns]) is None}

    def needs_calibration(self, names: list[str]) -> bool:
        return any(s.needs_calibration for n in names for s in self.rule_for(n).stages)


PACKED_PATH = "golfpack/_packed.py"  # the module's path in an inlined script's bundle
PACKED_NAMES = ("NAME", "FILL", "RULES", "STAGES")  # what it assigns, in order, and nothing else
PACKED_DOC = '"""The pipeline golfpack inline packed (codec/rules.py)."""\n'


def packed_module(values: dict) -> str:
    """The packed module's source: its docstring, then each of :data:`PACKED_NAMES` assigned
    the ``repr`` of its value (literals only: ``packer/records/check_inline.py`` reads them back
    with ``ast.literal_eval`` and types every field)."""
    return PACKED_DOC + "".join(f"{name} = {values[name]!r}\n" for name in PACKED_NAMES)


def packed_source(spec: PipelineSpec, extra: tuple[type[Stage], ...] = ()) -> str:
    """``spec`` as the module ``golfpack._packed`` of an inlined script (:func:`packed_spec` reads
    it): its name, whether it fills, each rule with its stages' names and typed parameters, and
    ``module:Class`` of each stage class it uses, with ``extra`` (classes a fill may code with
    beyond the rules' own: round-to-nearest on a GPTQ rule's grid)."""
    classes = {type(s) for r in spec.rules for s in r.stages} | set(extra)
    stages = {c.name: f"{c.__module__}:{c.__qualname__}" for c in sorted(classes, key=lambda c: c.name)}
    rules = [(r.name, r.patterns, r.roles, r.allocate, tuple((s.name, dataclasses.asdict(s.params)) for s in r.stages))
             for r in spec.rules]
    return packed_module({"NAME": spec.source, "FILL": spec.fill, "RULES": rules, "STAGES": stages})


def packed_classes(packed) -> dict[str, type[Stage]]:
    """The stage classes a packed pipeline names, imported from the script's own bundle."""
    out = {}
    for name, ref in packed.STAGES.items():
        module, _, cls = ref.partition(":")
        out[name] = getattr(importlib.import_module(module), cls)
    return out


def packed_spec(packed) -> PipelineSpec:
    """The pipeline of a ``golfpack._packed`` module :func:`packed_source` wrote."""
    classes = packed_classes(packed)
    rules = tuple(Rule(tuple(patterns), tuple(classes[s](**params) for s, params in chain), name, allocate,
                       tuple(roles)) for name, patterns, roles, allocate, chain in packed.RULES)
    return PipelineSpec(rules, packed.NAME, packed.FILL)


def packed_decoders(packed) -> dict[str, DecoderSpec]:
    """Stage name -> decoder, for every stage a packed pipeline may have coded with."""
    return {name: cls.decoder() for name, cls in packed_classes(packed).items()}
