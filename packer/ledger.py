"""The byte ledger of an artifact, or of a records folder's model file (``.gpak``, the codec
container alone): where every one of its bytes goes, against the budget.

Every part is computed from the structure it describes (zip headers from the member names,
container overhead from its header, manifest and digest, tensors from their spans), never as
a remainder, so the test that the parts add up to the file size can fail.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Mapping

from ..codec.decoders.config import first_match
from ..codec.decoders.chain import DecoderSpec, check_container
from ..codec.decoders.container import ALIASES_KEY, DIGEST_BYTES, HEADER, read_container
from ..codec.contenders import (ALLOCATION_FIELDS, ALLOCATION_KEY, CHOSEN_KEY, CONTENDER_FIELDS, CONTENDERS, CONTENDERS_KEY,
                               PREDICTED_FIELD)
from ..codec.host import TensorLedger, ledger as tensor_ledger
from ..codec.rules import RULE_BY_ROLE_KEY
from ..model.builders import BUILDER, GPT_BUILDER
from ..model.console import printable
from .runtime.artifact import BOOTSTRAP, MANIFEST, WEIGHTS, zip_overhead
from .verify import Verified


@dataclass
class Ledger:
    path: str
    sha256: str
    total: int
    budget: int
    zip_overhead: int
    bootstrap: int
    manifest: int
    code_compressed: int
    code_raw: int
    code_minified: int
    code_codec: str
    weights: int
    container_overhead: int  # container header, manifest and digest
    requirements: dict[str, list[str]]
    tensors: list[TensorLedger] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)  # per tensor: the name of the pipeline rule that coded it
    allocation: dict[str, dict] = field(default_factory=dict)  # --fill's choice per tensor (from the container)
    model: str = ""  # the model builder the container names ("module:function"), shown, never imported
    contenders: list[dict] = field(default_factory=list)  # --fill's closed loop: every contender scored
    chosen: str = ""  # ... and the one that shipped
    kind: str = "artifact"  # or "model file": a container alone, whose code is the script beside it
    aliases: dict[str, str] = field(default_factory=dict)  # names given back as a coded tensor (ALIASES_KEY)

    @property
    def headroom(self) -> int:
        return self.budget - self.total

    def classes(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = defaultdict(lambda: {"params": 0, "bytes": 0})
        for t, group in zip(self.tensors, self.groups):
            out[group]["params"] += t.params
            out[group]["bytes"] += t.bytes
        return dict(out)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["headroom"] = self.headroom
        d["tensors"] = [{**asdict(t), "bits_per_param": t.bits_per_param, "class": g}
                        for t, g in zip(self.tensors, self.groups)]
        d["classes"] = self.classes()
        params = sum(t.params for t in self.tensors)
        d["params"] = params
        d["bits_per_param_total"] = 8 * self.total / max(params, 1)
        d["bits_per_param_weights"] = 8 * self.weights / max(params, 1)
        return d


def read_allocation(meta: dict, names: set[str]) -> dict[str, dict]:
    """``--fill``'s record in the container meta, kept only where every field has its type
    (the container is untrusted; anything else is left out of the ledger)."""
    raw = meta.get(ALLOCATION_KEY)
    if not isinstance(raw, dict):
        return {}
    ok = lambda v: isinstance(v, dict) and set(v) == set(ALLOCATION_FIELDS) and all(  # noqa: E731
        isinstance(v[k], t) and not isinstance(v[k], bool) and (t is not str or len(v[k]) <= 32)
        for k, t in ALLOCATION_FIELDS.items())
    return {n: v for n, v in sorted(raw.items()) if n in names and ok(v)}


def read_contenders(meta: dict) -> tuple[list[dict], str]:
    """``--fill``'s closed-loop record (``CONTENDER_FIELDS``, the chosen contender's name), kept
    only when every entry is well-typed and names a known contender once; else nothing."""
    raw, chosen = meta.get(CONTENDERS_KEY), meta.get(CHOSEN_KEY)
    fields = {**CONTENDER_FIELDS, PREDICTED_FIELD[0]: PREDICTED_FIELD[1]}
    ok = lambda v: (isinstance(v, dict) and set(CONTENDER_FIELDS) <= set(v) <= set(fields)  # noqa: E731
                    and v["name"] in CONTENDERS and all(isinstance(v[k], fields[k]) and not isinstance(v[k], bool)
                                                        for k in v))
    if not (isinstance(raw, list) and len(raw) <= len(CONTENDERS) and all(ok(v) for v in raw) and chosen in CONTENDERS
            and any(v["name"] == chosen for v in raw) and len({v["name"] for v in raw}) == len(raw)):
        return [], ""
    return [dict(v) for v in raw], chosen


def read_model_builder(meta: dict) -> str:
    """The container's model builder when it is a well-formed name (the GPT's when absent)."""
    ref = meta.get("model_builder", GPT_BUILDER)
    return ref if isinstance(ref, str) and len(ref) <= 200 and BUILDER.fullmatch(ref) else "(malformed)"


def read_rule_by_role(meta: dict, names: set[str], n_rules: int) -> dict[str, int]:
    """The rules a role chose (``PipelineSpec.chosen_by_role``), kept only where well-typed."""
    raw = meta.get(RULE_BY_ROLE_KEY)
    if not isinstance(raw, dict):
        return {}
    return {n: i for n, i in raw.items() if n in names and isinstance(i, int) and not isinstance(i, bool)
            and 0 <= i < n_rules}


def artifact_ledger(v: Verified, budget: int | None = None) -> Ledger:
    """The ledger of a verified artifact, against ``budget`` or, by default, the budget it was
    built for (its manifest's)."""
    budget = v.manifest.budget if budget is None else budget
    if budget < 1:
        raise ValueError(f"budget must be a positive number of bytes, got {budget}")
    m = v.manifest
    rows = tensor_ledger(v.container, v.table)
    rules = [tuple(r["match"]) for r in m.pipeline]
    by_role = read_rule_by_role(v.container.meta, {t.name for t in rows}, len(rules))
    index = [by_role[t.name] if t.name in by_role else first_match(t.name, rules) for t in rows]
    groups = [m.pipeline[i]["name"] if i is not None else "unmatched" for i in index]
    return Ledger(
        path=str(v.path), sha256=v.sha256, total=v.size, budget=budget, zip_overhead=zip_overhead(v.art.order),
        bootstrap=len(v.art.members[BOOTSTRAP]), manifest=v.art.manifest_bytes,
        code_compressed=len(v.art.members[m.code["member"]]), code_raw=m.code["raw_bytes"],
        code_minified=m.code["minified_bytes"], code_codec=m.code["codec"], weights=len(v.art.members[WEIGHTS]),
        container_overhead=HEADER.size + v.container.manifest_bytes + DIGEST_BYTES,
        requirements={"required": list(m.requirements["required"]), "optional": list(m.requirements["optional"])},
        tensors=rows, groups=groups, allocation=read_allocation(v.container.meta, {t.name for t in rows}),
        model=read_model_builder(v.container.meta), aliases=dict(v.container.meta.get(ALIASES_KEY, {})),
        **dict(zip(("contenders", "chosen"), read_contenders(v.container.meta))))


def model_file_ledger(path: str, data: bytes, budget: int, table: Mapping[str, DecoderSpec]) -> Ledger:
    """The ledger of a model file (a records folder's ``.gpak``): its tensors grouped by the
    stage that quantized or stored them, read and checked as hostile input by ``table``."""
    if budget < 1:
        raise ValueError(f"budget must be a positive number of bytes, got {budget}")
    try:
        container = read_container(data)
        check_container(container, table)
    except ValueError as e:  # ContainerError
        raise ValueError(f"{path}: {e}") from None
    rows = tensor_ledger(container, table)
    return Ledger(
        path=path, sha256=hashlib.sha256(data).hexdigest(), total=len(data), budget=budget, zip_overhead=0,
        bootstrap=0, manifest=0, code_compressed=0, code_raw=0, code_minified=0, code_codec="-", weights=len(data),
        container_overhead=HEADER.size + container.manifest_bytes + DIGEST_BYTES,
        requirements={"required": [], "optional": []}, tensors=rows,
        groups=[e.chain[0].stage if e.chain else "-" for e in container.entries],
        allocation=read_allocation(container.meta, {t.name for t in rows}), model=read_model_builder(container.meta),
        **dict(zip(("contenders", "chosen"), read_contenders(container.meta))), kind="model file",
        aliases=dict(container.meta.get(ALIASES_KEY, {})))


def format_ledger(led: Ledger) -> str:
    pct = lambda n: 100.0 * n / led.budget  # noqa: E731
    params = sum(t.params for t in led.tensors)
    req = led.requirements
    artifact = led.kind == "artifact"
    lines = [
        f"{led.kind} {printable(led.path)}  sha256 {led.sha256}",
        f"total            {led.total:>12,} bytes  budget {led.budget:,}  headroom {led.headroom:,} "
        f"({pct(led.headroom):.2f}%){'  OVER BUDGET' if led.headroom < 0 else ''}"
        + ("" if artifact else "  (the script beside it counts against the budget too)"),
        *([f"  zip overhead   {led.zip_overhead:>12,}",
           f"  bootstrap      {led.bootstrap:>12,}   {BOOTSTRAP}",
           f"  manifest       {led.manifest:>12,}   {MANIFEST}",
           f"  code           {led.code_compressed:>12,}   raw {led.code_raw:,} -> minified {led.code_minified:,} -> "
           f"{led.code_codec} {led.code_compressed:,} ({led.code_compressed / max(led.code_raw, 1):.3f} of raw)"]
          if artifact else []),
        f"  weights        {led.weights:>12,}   {8 * led.weights / max(params, 1):.3f} bits/param over {params:,} "
        f"params; container overhead {led.container_overhead:,}",
        f"model            {printable(led.model)}",
        *([f"requires         {', '.join(req['required']) or '-'}"
           + (f"  (optional: {', '.join(req['optional'])})" if req["optional"] else "")] if artifact else []),
        "",
        f"{'tensor':<28} {'shape':<12} {'params':>9} {'bytes':>10} {'bits/p':>7} {'H0 bound':>10} {'share':>6}  chain",
    ]
    for t in led.tensors:
        bound = f"{t.entropy_bytes:,.0f}" if t.entropy_bytes is not None else "-"
        shape = "x".join(map(str, t.shape))
        lines.append(f"{printable(t.name):<28} {shape:<12} {t.params:>9,} {t.bytes:>10,} {t.bits_per_param:>7.3f} "
                     f"{bound:>10} {pct(t.bytes):>5.2f}%  {printable(t.chain)}")
    if led.aliases:  # checked by the container's reader: new printable names of coded tensors
        lines.append("aliases (coded once, given back under both names): "
                     + ", ".join(f"{printable(a)} = {printable(n)}" for a, n in led.aliases.items()))
    if led.allocation:
        measured = {t.name: t.bytes for t in led.tensors}
        est = sum(a["estimated_bytes"] for a in led.allocation.values())
        got = sum(measured[n] for n in led.allocation)
        lines += ["", f"allocation (--fill): {len(led.allocation)} tensors, estimated {est:,} bytes, "
                      f"measured {got:,} ({100 * (got - est) / max(est, 1):+.2f}%)",
                  f"{'tensor':<28} {'bits':>4} {'clip':<12} {'rdoq':>5} {'lqer':>4} {'estimated':>10} {'measured':>10} "
                  f"{'distortion':>11}"]
        for n, a in led.allocation.items():
            lines.append(f"{printable(n):<28} {a['bits']:>4} {printable(a['clip']):<12} {a['rdoq']:>5g} {a['lqer']:>4} "
                         f"{a['estimated_bytes']:>10,} "
                         f"{measured[n]:>10,} {a['distortion']:>11.4g}")
    if led.contenders:
        best = next(c["loss"] for c in led.contenders if c["name"] == led.chosen)
        lines += ["", f"closed loop (--fill): {len(led.contenders)} contenders scored on held-out training tokens; "
                      f"shipped: {led.chosen}",
                  f"{'contender':<14} {'bytes':>12} {'loss (nats)':>12} {'vs shipped':>11} {'predicted rise':>15}"]
        lines += [f"{c['name']:<14} {c['bytes']:>12,} {c['loss']:>12.6f} {c['loss'] - best:>+11.6f} "
                  + (f"{c['predicted']:>15.6g}" if "predicted" in c else f"{'-':>15}") for c in led.contenders]
    lines.append("")
    lines.append(f"{'class':<12} {'params':>11} {'bytes':>12} {'bits/p':>7} {'share':>6}")
    for name, c in sorted(led.classes().items()):
        lines.append(f"{printable(name):<12} {int(c['params']):>11,} {int(c['bytes']):>12,} "
                     f"{8 * c['bytes'] / max(c['params'], 1):>7.3f} {pct(c['bytes']):>5.2f}%")
    return "\n".join(lines)


def require_matplotlib() -> None:
    """``--plot``'s dependency, checked before any work."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install 'golfpack[plot]'") from None


def plot_ledger(led: Ledger, out: str, force: bool = False) -> None:
    """A PNG of where the bytes go; written atomically, never over an existing file unless ``force``."""
    import io

    from ..model.files import atomic_write_bytes, refuse_existing

    refuse_existing(out, force)
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [(f"{printable(n)} ({8 * c['bytes'] / max(c['params'], 1):.2f} b/p)", c["bytes"])
             for n, c in sorted(led.classes().items())]
    parts += [(label, n) for label, n in (("code", led.code_compressed), ("container overhead", led.container_overhead),
                                          ("zip+bootstrap+manifest", led.zip_overhead + led.bootstrap + led.manifest))
              if n]
    if led.headroom > 0:
        parts.append(("headroom", led.headroom))
    fig, ax = plt.subplots(figsize=(10, 2.8))
    left = 0
    for i, (label, n) in enumerate(parts):
        ax.barh(0, n, left=left, color="lightgrey" if label == "headroom" else f"C{i}", label=f"{label}: {n:,} B")
        left += n
    ax.axvline(led.budget, color="red", linestyle="--", label=f"budget {led.budget:,} B")
    ax.set_yticks([])
    ax.set_xlabel("bytes")
    ax.set_title(f"{printable(led.path)}: {led.total:,} bytes")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=3, fontsize=8, frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=120, format="png")
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue(), overwrite=force)
