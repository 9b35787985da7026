"""Pipeline specs: ordered rules mapping tensor-name globs to stage chains.

A chain is written ``stage key=value ... -> stage ... -> ...``. Specs come from a TOML file::

    [[rule]]
    match = ["blocks.*.mlp.*.weight"]
    chain = "gptq bits=6 clip=sdcap:12.85 -> ans"

or inline, rules separated by ``;``: ``'blocks.*.weight=rtn bits=6 -> ans; *=fp16 -> brotli'``,
or the word ``default`` (``codec/default_pipeline.toml``). A TOML rule may have a ``name``
(the class ``golfpack inspect`` groups its tensors under); otherwise its first glob names it.
A TOML file may ask to fill the byte budget (top-level ``fill = true``: ``golfpack build``
then chooses bits, clip and low-rank correction per matrix, codec/fill.py), and a rule may keep its grid out of
that choice (``allocate = false``, e.g. for control tensors whose loss the allocator's
Hessian-weighted error does not see).
Chains are built and type-checked when the spec is loaded: a wrong hand-off fails here, not
at decode time.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .decoders.base import first_match
from .decoders.chain import chain_mismatch
from .encoders.intq import QuantParams
from .registry import Registered, discover, get_stage
from .stage import Stage, StageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_SPEC = Path(__file__).with_name("default_pipeline.toml")

RULE_KEYS = {"match", "chain", "name", "allocate"}
SPEC_KEYS = {"rule", "fill"}

HINTS = {("symbols", "bytes"): "insert 'pack' before a byte compressor, or use 'ans'",
         ("tensor", "symbols"): "start with a quantizer such as 'rtn' or 'gptq'",
         ("tensor", "bytes"): "start with a quantizer or a float stage such as 'fp16'"}


@dataclass(frozen=True)
class Rule:
    patterns: tuple[str, ...]
    stages: tuple[Stage, ...]
    name: str = ""
    allocate: bool = True  # --fill may choose this rule's grid (when it starts with a grid quantizer)

    @property
    def label(self) -> str:
        return self.name or self.patterns[0]

    @property
    def chain(self) -> str:
        return " -> ".join(s.describe() for s in self.stages)


@dataclass(frozen=True)
class PipelineSpec:
    rules: tuple[Rule, ...]
    source: str
    fill: bool = False  # the spec asks build to fill the budget

    def rule_for(self, name: str) -> Rule:
        i = first_match(name, (r.patterns for r in self.rules))
        if i is None:
            raise StageError(f"pipeline {self.source}: no rule matches tensor '{name}' (add a final '*' rule)")
        return self.rules[i]

    def to_json(self) -> list[dict]:
        """The rules as data (labels, globs, chain text), for the artifact's manifest."""
        return [{"name": r.label, "match": list(r.patterns), "chain": r.chain} for r in self.rules]

    def needs_calibration(self, names: list[str]) -> bool:
        return any(s.needs_calibration for n in names for s in self.rule_for(n).stages)


def parse_chain(text: str, registry: Mapping[str, Registered] | None = None) -> tuple[Stage, ...]:
    registry = discover() if registry is None else registry
    stages: list[Stage] = []
    for part in (p.strip() for p in text.split("->")):
        if not part:
            raise StageError(f"chain '{text}': empty stage")
        name, *args = part.split()
        kwargs = {}
        for a in args:
            key, eq, val = a.partition("=")
            if not eq or not key:
                raise StageError(f"chain '{text}': expected key=value, got '{a}'")
            kwargs[key] = val
        stages.append(get_stage(name, registry)(**kwargs))
    check_chain(stages, text)
    return tuple(stages)


def check_chain(stages: list[Stage], text: str) -> None:
    bad = chain_mismatch([(s.consumes, s.produces) for s in stages])
    if bad is None:
        return
    i, kind = bad
    if i == len(stages):
        raise StageError(f"chain '{text}': ends in {kind}; it must end in bytes (add a coder such as 'ans' or 'zstd')")
    s = stages[i]
    after = f"after '{stages[i - 1].name}'" if i else "at the start"
    hint = HINTS.get((kind, s.consumes), "")
    raise StageError(f"chain '{text}': stage '{s.name}' consumes {s.consumes} but gets {kind} {after}"
                     + (f"; {hint}" if hint else ""))


def _rules_from_toml(doc: dict, source: str, registry) -> tuple[Rule, ...]:
    rules = doc.get("rule")
    if not isinstance(rules, list) or not rules:
        raise StageError(f"pipeline {source}: expected one or more [[rule]] tables")
    out = []
    for i, r in enumerate(rules):
        if not isinstance(r, dict):
            raise StageError(f"pipeline {source}: rule #{i + 1} must be a table")
        match, chain, name, allocate = r.get("match"), r.get("chain"), r.get("name", ""), r.get("allocate", True)
        if isinstance(match, str):
            match = [match]
        if not (isinstance(match, list) and match and all(isinstance(m, str) for m in match) and isinstance(chain, str)
                and isinstance(name, str) and isinstance(allocate, bool)) or set(r) - RULE_KEYS:
            raise StageError(f"pipeline {source}: rule #{i + 1} needs 'match' (glob or list), 'chain' (string) "
                             "and optionally 'name' (string) and 'allocate' (true/false), nothing else")
        out.append(Rule(tuple(match), parse_chain(chain, registry), name, allocate))
    return tuple(out)


def load_spec(spec: str | Path = "default", registry: Mapping[str, Registered] | None = None) -> PipelineSpec:
    registry = discover() if registry is None else registry
    text = str(spec)
    path = DEFAULT_SPEC if text == "default" else Path(text)
    if text == "default" or text.endswith(".toml"):
        if not path.is_file():
            raise StageError(f"{path}: no such pipeline file")
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as e:
            raise StageError(f"{path}: not valid TOML ({e})") from None
        fill = doc.get("fill", False)
        if not isinstance(fill, bool) or set(doc) - SPEC_KEYS:
            raise StageError(f"{path}: a pipeline file has [[rule]] tables and optionally 'fill' (true/false), "
                             "nothing else")
        source = "default" if text == "default" else str(path)
        return PipelineSpec(_rules_from_toml(doc, str(path), registry), source, fill)
    rules = []
    for part in (p.strip() for p in text.split(";") if p.strip()):
        pattern, eq, chain = part.partition("=")
        if not eq or not pattern.strip() or " " in pattern.strip():
            raise StageError(f"inline pipeline: expected 'glob=chain', got '{part}'")
        rules.append(Rule((pattern.strip(),), parse_chain(chain, registry)))
    if not rules:
        raise StageError("inline pipeline: no rules")
    return PipelineSpec(tuple(rules), "inline")


def quantizer_rules(spec: PipelineSpec) -> list[list]:
    """``[glob, bits, clip]`` per rule, for quantization-aware training: the grid of the chain's
    first stage when it quantizes on the per-row grid (its params are ``QuantParams``: rtn, gptq,
    or a plugin built on them), ``bits=0`` (leave the weight alone) otherwise."""
    rules = []
    for rule in spec.rules:
        first = rule.stages[0]
        bits, clip = (first.params.bits, first.params.clip) if isinstance(first.params, QuantParams) else (0, "absmax")
        rules.extend([p, bits, clip] for p in rule.patterns)
    return rules
