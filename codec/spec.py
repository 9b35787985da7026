"""Pipeline specs, parsed: ordered rules mapping tensor-name globs to stage chains (the spec
objects themselves, and the packed form an inlined script carries, are ``rules.py``).

A chain is written ``stage key=value ... -> stage ... -> ...``. Specs come from a TOML file::

    [[rule]]
    match = ["blocks.*.mlp.*.weight"]
    chain = "gptq bits=6 clip=sdcap:12.85 -> ans"

or inline, rules separated by ``;``: ``'blocks.*.weight=rtn bits=6 -> ans; *=fp16 -> brotli'``,
or the name of a pipeline golfpack ships (``PIPELINES``: ``default``, which fills the budget,
and ``compact``, one fixed grid per role, for the least code in an inlined script). A rule may
match tensors by role as well as by name (``role = ["matrix"]`` in TOML, ``role:matrix=chain``
inline), so a pipeline fits a model whose names it has never seen: ``trainer/roles.py:
tensor_roles`` gives each tensor of the model one of ``ROLES`` (``embedding``: the token
embedding or output head; ``matrix``: any other 2-D weight that is not a named scale or gain;
``buffer``: state that is not a parameter; ``small``: the rest, a convolution's 3-D weight too).
A TOML rule may have a ``name`` (the class ``golfpack inspect`` groups its tensors under);
otherwise its first glob names it. A TOML file may ask to fill the byte budget (top-level
``fill = true``: ``golfpack build`` then chooses bits, clip and low-rank correction per matrix,
codec/fill.py), and a rule may keep its grid out of that choice (``allocate = false``, e.g. for
control tensors whose loss the allocator's Hessian-weighted error does not see).
Chains are built and type-checked when the spec is loaded: a wrong hand-off fails here, not
at decode time.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Mapping

from .decoders.chain import chain_mismatch
from .decoders.grid import Grid
from .encoders.intq import QuantParams
from .registry import Registered, discover, get_stage
from .decoders.config import ROLES
from .rules import ROLE_PREFIX, PipelineSpec, Rule
from .stage import Stage, StageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# The pipelines golfpack ships, by name: files beside this module (a records script carries its spec as data).
PIPELINES = {"default": "default_pipeline.toml", "compact": "compact_pipeline.toml"}

RULE_KEYS = {"match", "role", "chain", "name", "allocate"}
SPEC_KEYS = {"rule", "fill"}

HINTS = {("symbols", "bytes"): "insert 'pack' before a byte compressor, or use 'ans'",
         ("tensor", "symbols"): "start with a quantizer such as 'rtn' or 'gptq'",
         ("tensor", "bytes"): "start with a quantizer or a float stage such as 'fp16'"}


def spec_json(spec: PipelineSpec) -> list[dict]:
    """The rules as data (labels, globs, roles, chain text), for the artifact's manifest."""
    return [{"name": r.label, "match": list(r.patterns), "chain": r.chain} | ({"role": list(r.roles)} if r.roles else {})
            for r in spec.rules]


def spec_doc(spec: PipelineSpec) -> dict:
    """The spec as a pipeline file's table (:func:`spec_from_doc` reads it back): how a records
    script carries its pipeline."""
    rules = [{"name": r.label, "match": list(r.patterns), "role": list(r.roles), "chain": r.chain,
              "allocate": r.allocate} for r in spec.rules]
    return {"fill": spec.fill, "rule": rules}


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
    check_stage_kinds(stages, text)
    return tuple(stages)


def check_stage_kinds(stages: list[Stage], text: str) -> None:
    """A written chain's stages fit end to end and end in bytes (the container's entries are
    checked against their decoders by ``decoders/chain.py: check_chain``)."""
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
        match, role, chain = r.get("match", []), r.get("role", []), r.get("chain")
        name, allocate = r.get("name", ""), r.get("allocate", True)
        match, role = [match] if isinstance(match, str) else match, [role] if isinstance(role, str) else role
        if not (isinstance(match, list) and isinstance(role, list) and (match or role) and isinstance(chain, str)
                and all(isinstance(m, str) for m in match) and all(x in ROLES for x in role)
                and isinstance(name, str) and isinstance(allocate, bool)) or set(r) - RULE_KEYS:
            raise StageError(f"pipeline {source}: rule #{i + 1} needs 'match' (glob or list) and/or 'role' (one or "
                             f"more of {', '.join(ROLES)}), 'chain' (string) and optionally 'name' (string) and "
                             "'allocate' (true/false), nothing else")
        out.append(Rule(tuple(match), parse_chain(chain, registry), name, allocate, tuple(role)))
    return tuple(out)


def load_spec(spec: str | Path = "default", registry: Mapping[str, Registered] | None = None) -> PipelineSpec:
    registry = discover() if registry is None else registry
    text = str(spec)
    shipped = PIPELINES.get(text)
    path = Path(__file__).with_name(shipped) if shipped else Path(text)
    if shipped or text.endswith(".toml"):
        if not path.is_file():
            raise StageError(f"{path}: no such pipeline file")
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as e:
            raise StageError(f"{path}: not valid TOML ({e})") from None
        return spec_from_doc(doc, text if shipped else str(path), registry)
    rules = []
    for part in (p.strip() for p in text.split(";") if p.strip()):
        pattern, eq, chain = (x.strip() for x in part.partition("="))
        if not eq or not pattern or " " in pattern:
            raise StageError(f"inline pipeline: expected 'glob=chain' or 'role:ROLE=chain', got '{part}'")
        if pattern.startswith(ROLE_PREFIX):
            role = pattern[len(ROLE_PREFIX):]
            if role not in ROLES:
                raise StageError(f"inline pipeline: unknown role '{role}' (roles: {', '.join(ROLES)})")
            rules.append(Rule((), parse_chain(chain, registry), roles=(role,)))
        else:
            rules.append(Rule((pattern,), parse_chain(chain, registry)))
    if not rules:
        raise StageError("inline pipeline: no rules")
    return PipelineSpec(tuple(rules), "inline")


def spec_from_doc(doc: dict, source: str, registry: Mapping[str, Registered] | None = None) -> PipelineSpec:
    """A spec from a pipeline file's table (parsed TOML, or ``PipelineSpec.to_doc``)."""
    registry = discover() if registry is None else registry
    fill = doc.get("fill", False)
    if not isinstance(fill, bool) or set(doc) - SPEC_KEYS:
        raise StageError(f"{source}: a pipeline file has [[rule]] tables and optionally 'fill' (true/false), "
                         "nothing else")
    return PipelineSpec(_rules_from_toml(doc, source, registry), source, fill)


def quantizer_rules(spec: PipelineSpec, roles: Mapping[str, str]) -> list[list]:
    """``[name, bits, clip]`` for each tensor of ``roles`` (name -> role, the model's), for
    quantization-aware training: the grid of its rule's first stage when that quantizes on the
    per-row grid (its params are ``QuantParams``: rtn, gptq, or a plugin built on them),
    ``bits=0`` (leave the weight alone) otherwise."""
    rules = []
    for name, role in roles.items():
        first = spec.rule_for(name, role).stages[0]
        grid = Grid(first.params.bits, first.params.clip) if isinstance(first.params, QuantParams) else Grid(0)
        rules.append(grid.rule(name))
    return rules
