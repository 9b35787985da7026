"""The byte ledger of an artifact: where every one of its bytes goes, against the budget."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field

from ..codec.container import read_container
from ..codec.decode import table_from_json
from ..codec.pipeline import TensorLedger, ledger as tensor_ledger
from .artifact import BOOTSTRAP, MANIFEST, WEIGHTS, Artifact


def tensor_class(name: str) -> str:
    if name in ("tok_emb.weight", "lm_head.weight"):
        return "embedding"
    if ".attn.c_" in name or ".attn.proj." in name:
        return "attention"
    if ".mlp." in name:
        return "mlp"
    return "control"


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
    tensors: list[TensorLedger] = field(default_factory=list)

    @property
    def headroom(self) -> int:
        return self.budget - self.total

    def classes(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = defaultdict(lambda: {"params": 0, "bytes": 0})
        for t in self.tensors:
            c = out[tensor_class(t.name)]
            c["params"] += t.params
            c["bytes"] += t.bytes
        return dict(out)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["headroom"] = self.headroom
        d["tensors"] = [{**asdict(t), "bits_per_param": t.bits_per_param, "class": tensor_class(t.name)}
                        for t in self.tensors]
        d["classes"] = self.classes()
        params = sum(t.params for t in self.tensors)
        d["params"] = params
        d["bits_per_param_total"] = 8 * self.total / max(params, 1)
        d["bits_per_param_weights"] = 8 * self.weights / max(params, 1)
        return d


def artifact_ledger(art: Artifact, budget: int) -> Ledger:
    code = art.manifest["code"]
    container = read_container(art.members[WEIGHTS])
    table = table_from_json(art.manifest["decoders"])
    rows = tensor_ledger(container, table)
    return Ledger(
        path=str(art.path), sha256=art.sha256, total=art.size, budget=budget, zip_overhead=art.zip_overhead,
        bootstrap=len(art.members[BOOTSTRAP]), manifest=art.manifest_bytes,
        code_compressed=len(art.members[code["member"]]), code_raw=int(code["raw_bytes"]),
        code_minified=int(code["minified_bytes"]), code_codec=str(code["codec"]), weights=len(art.members[WEIGHTS]),
        container_overhead=len(art.members[WEIGHTS]) - sum(t.bytes for t in rows), tensors=rows)


def format_ledger(led: Ledger) -> str:
    pct = lambda n: 100.0 * n / led.budget  # noqa: E731
    params = sum(t.params for t in led.tensors)
    lines = [
        f"artifact {led.path}  sha256 {led.sha256}",
        f"total            {led.total:>12,} bytes  budget {led.budget:,}  headroom {led.headroom:,} "
        f"({pct(led.headroom):.2f}%){'  OVER BUDGET' if led.headroom < 0 else ''}",
        f"  zip overhead   {led.zip_overhead:>12,}",
        f"  bootstrap      {led.bootstrap:>12,}   {BOOTSTRAP}",
        f"  manifest       {led.manifest:>12,}   {MANIFEST}",
        f"  code           {led.code_compressed:>12,}   raw {led.code_raw:,} -> minified {led.code_minified:,} -> "
        f"{led.code_codec} {led.code_compressed:,} ({led.code_compressed / max(led.code_raw, 1):.3f} of raw)",
        f"  weights        {led.weights:>12,}   {8 * led.weights / max(params, 1):.3f} bits/param over {params:,} "
        f"params; container overhead {led.container_overhead:,}",
        "",
        f"{'tensor':<28} {'shape':<12} {'params':>9} {'bytes':>10} {'bits/p':>7} {'H0 bound':>10} {'share':>6}  chain",
    ]
    for t in led.tensors:
        bound = f"{t.entropy_bytes:,.0f}" if t.entropy_bytes is not None else "-"
        shape = "x".join(map(str, t.shape))
        lines.append(f"{t.name:<28} {shape:<12} {t.params:>9,} {t.bytes:>10,} {t.bits_per_param:>7.3f} {bound:>10} "
                     f"{pct(t.bytes):>5.2f}%  {t.chain}")
    lines.append("")
    lines.append(f"{'class':<12} {'params':>11} {'bytes':>12} {'bits/p':>7} {'share':>6}")
    for name, c in sorted(led.classes().items()):
        lines.append(f"{name:<12} {int(c['params']):>11,} {int(c['bytes']):>12,} {8 * c['bytes'] / max(c['params'], 1):>7.3f} "
                     f"{pct(c['bytes']):>5.2f}%")
    return "\n".join(lines)


def plot_ledger(led: Ledger, out: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install 'golfpack[plot]'") from None
    parts = [(f"{n} ({8 * c['bytes'] / max(c['params'], 1):.2f} b/p)", c["bytes"]) for n, c in sorted(led.classes().items())]
    parts += [("code", led.code_compressed), ("container overhead", led.container_overhead),
              ("zip+bootstrap+manifest", led.zip_overhead + led.bootstrap + led.manifest)]
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
    ax.set_title(f"{led.path}: {led.total:,} bytes")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=3, fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
