"""Calibration from training data: GPTQ's Hessians and the loss's sensitivity to each weight.

Everything here reads ``(x, y)`` batches of token ids (``(batch, seq)`` tensors), from any
source: the script's own loader, or ``model/shards.py: shard_batches`` over challenge shards. It asks of
the model only ``forward(x, y) -> mean loss``, so it calibrates a model golfpack has never seen.

Hessians: ``H = 2 X^T X / n`` of the inputs of every linear layer, found by hooks, and of
every embedding weight that also serves as the output layer (a tied head: a function call, not
a module, found by ``model.anatomy.EmbeddingOutputs``), whose input is the final hidden state.
Linear layers that read the very same tensor (q/k/v) share one Hessian object. Only training
batches should ever be given.
"""
from __future__ import annotations

import weakref
from typing import Iterable, Iterator

import torch

from ..codec.decoders.config import HEAD_PART, LOOKUP_PART
from ..model.anatomy import EmbeddingOutputs, probe_output_layers
from ..model.console import progress_bar

Batch = tuple[torch.Tensor, torch.Tensor]  # (input ids, target ids), each (batch, seq)


def take_tokens(batches: Iterator[Batch], tokens: int) -> list[Batch]:
    """Batches from ``batches`` until they hold at least ``tokens`` input tokens (none for 0)."""
    out, n = [], 0
    while n < tokens:
        batch = next(batches, None)
        if batch is None:
            raise ValueError(f"the batches ran out after {n:,} of the {tokens:,} tokens asked for")
        x, y = batch
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.ndim == 2 and x.shape == y.shape
                and x.numel() > 0 and not x.is_floating_point()):
            raise ValueError("a batch must be (x, y): two integer tensors of the same (batch, seq) shape")
        out.append((x, y))
        n += x.numel()
    return out


@torch.no_grad()
def hessians_of(model: torch.nn.Module, batches: Iterable[Batch], device: torch.device | str = "cpu",
                progress: bool = True) -> dict[str, torch.Tensor]:
    """GPTQ's Hessians of every linear layer's weight and every tied embedding, from ``batches``."""
    device = torch.device(device)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    sites: dict[str, str] = {}  # weight name -> the site whose input it reads
    inputs: dict[int, tuple[weakref.ref, str]] = {}  # an input seen in this forward -> its site

    def accumulate(name: str, x: torch.Tensor) -> None:
        seen = inputs.get(id(x))
        if seen is None or seen[0]() is not x:  # a freed tensor's id can be reused: the weak reference says
            inputs[id(x)] = seen = (weakref.ref(x), name)
        site = sites.setdefault(name, seen[1])
        if site != name:
            return  # the same input as an earlier layer (q/k/v): one Hessian object serves both
        x = x.detach().reshape(-1, x.shape[-1]).to(torch.float32)
        if site not in sums:
            sums[site] = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=device)
            counts[site] = 0
        sums[site] += (x.T @ x).double()
        counts[site] += x.shape[0]

    hooks = [module.register_forward_pre_hook(lambda m, a, n=f"{name}.weight": accumulate(n, a[0]))
             for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    was_training = model.training
    model.eval().to(device)
    batches = list(batches)
    try:
        with progress_bar(progress, total=sum(x.numel() for x, _ in batches), desc="calibrate", unit="tok") as bar:
            for x, y in batches:
                inputs.clear()
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"), \
                        EmbeddingOutputs(model, accumulate):
                    model(x.to(device), y.to(device))
                bar.update(x.numel())
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    hessians = {site: (2.0 * sums[site] / counts[site]).float().cpu() for site in sums}
    return {name: hessians[site] for name, site in sites.items() if site in hessians}


def mean_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``model(x, y)``, which must be the mean token loss, a one-element float tensor: all that
    golfpack asks of a model it has never seen, checked so that a model returning more (logits
    and loss) is told so in one line."""
    loss = model(x, y)
    if not (isinstance(loss, torch.Tensor) and loss.numel() == 1 and loss.is_floating_point()):
        raise ValueError("model(x, y) must return the mean loss (a one-element float tensor), got "  # one expression:
                         + (f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor)  # an inlined
                            else type(loss).__name__))  # script ships a pointer to it (packer/bundle.py)
    return loss


def sensitivities_of(model: torch.nn.Module, batches: Iterable[Batch], device: torch.device | str = "cpu",
                     progress: bool = True) -> dict[str, torch.Tensor]:
    """How much the training loss rises per squared unit of error in each weight, for every
    matrix the model has: ``S = (seq_len / 2) E[g^2]``, the diagonal empirical Fisher of the
    mean token loss, from one gradient per sequence (each row of each batch).

    Why: a quantizer's error ``d`` costs about ``sum(S * d^2)`` nats per token, in the same unit
    for every tensor, so an allocator can compare a byte spent on one matrix with a byte spent
    on another. GPTQ's Hessian ``2 X^T X`` weighs errors within one layer only: it cannot see
    that an embedding row of a frequent token, or a layer near the output, matters more. (One
    gradient per sequence averages ``seq_len`` tokens: ``E[g_seq^2]`` is the token Fisher over
    ``seq_len`` when token gradients are uncorrelated, hence the factor.)

    A tied embedding (``anatomy.probe_output_layers``) also gets its two roles' parts, under
    its name plus ``LOOKUP_PART`` and ``HEAD_PART``: the same estimator on the lookup's gradient
    (its output's, found by a forward hook on the ``nn.Embedding``, added up by token) and on
    the rest, the output head's. Why: GPTQ makes the head's errors cancel in the logits and
    never the lookup's, so the allocator prices the two apart (``codec/allocate.py: LossModel``).
    The gradients come from ``torch.autograd.grad``: the model's own ``.grad`` stay untouched."""
    device = torch.device(device)
    params = {n: p for n, p in model.named_parameters() if p.ndim == 2 and p.requires_grad}
    tied = {n for n in probe_output_layers(model).tied if n in params}
    sums = {n: torch.zeros(p.shape, dtype=torch.float64, device=device) for n, p in params.items()}
    sums |= {n + part: torch.zeros_like(sums[n]) for n in tied for part in (LOOKUP_PART, HEAD_PART)}
    lookups: list[tuple[str, torch.Tensor, torch.Tensor]] = []  # (weight, ids, output) of this sequence's lookups
    hooks = [m.register_forward_hook(lambda m, a, out, n=f"{name}.weight": lookups.append((n, a[0], out)))
             for name, m in model.named_modules() if f"{name}.weight" in tied]
    rows = [(x[i : i + 1], y[i : i + 1]) for x, y in batches for i in range(x.shape[0])]
    if not rows:
        raise ValueError("sensitivity needs at least one sequence")
    was_training = model.training
    model.train().to(device)
    try:
        with progress_bar(progress, total=sum(x.numel() for x, _ in rows), desc="sensitivity", unit="tok") as bar:
            for x, y in rows:
                lookups.clear()
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    loss = mean_loss(model, x.to(device), y.to(device))
                grads = torch.autograd.grad(loss, [*params.values(), *(out for *_, out in lookups)], allow_unused=True)
                lookup, f = {}, x.shape[1] / 2.0
                for (n, ids, _), g in zip(lookups, grads[len(params):]):
                    if g is not None:  # the lookup's gradient: its output's, added up by token
                        lookup.setdefault(n, torch.zeros_like(sums[n])).index_add_(
                            0, ids.reshape(-1), g.reshape(-1, g.shape[-1]).double())
                for n, g in zip(params, grads):
                    if g is not None:
                        g = g.double()
                        sums[n] += g.square() * f
                        if n in lookup:
                            sums[n + LOOKUP_PART] += lookup[n].square() * f
                            sums[n + HEAD_PART] += (g - lookup[n]).square() * f
                bar.update(x.numel())
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return {n: (s / len(rows)).float().cpu() for n, s in sums.items()}
