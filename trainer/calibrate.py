"""Calibration from training data: GPTQ's Hessians and the loss's sensitivity to each weight.

Hessians: ``H = 2 X^T X / n`` of the inputs of every linear layer.

Hooks record the input of each linear layer and, for a tied embedding
(``model.builders.tied_embeddings``, with a ``head`` that maps hidden states to logits, as the
GPT), the final hidden states that multiply the embedding as the output layer. Inputs of the
GPT's q/k/v share one Hessian object (they see the same activations). Only training shards are read.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..model.builders import tied_embeddings
from ..model.console import progress_bar
from ..model.checkpoint import MAX_CHECKPOINT_BYTES
from ..model.files import atomic_write_bytes, open_regular
from ..model.shards import TokenStream

CALIB_SUFFIX = ".calib.pt"
SENS_SUFFIX = ".sens.pt"


def calib_path(checkpoint: str | os.PathLike) -> Path:
    """Where a checkpoint's calibration statistics live: ``final.pt`` -> ``final.calib.pt``."""
    p = Path(checkpoint)
    return p.with_name(p.stem + CALIB_SUFFIX)


def sens_path(checkpoint: str | os.PathLike) -> Path:
    """Where a checkpoint's loss sensitivities live: ``final.pt`` -> ``final.sens.pt``."""
    p = Path(checkpoint)
    return p.with_name(p.stem + SENS_SUFFIX)


@torch.no_grad()
def collect_hessians(model: torch.nn.Module, train_files: str, tokens: int, seq_len: int, batch_seqs: int = 8,
                     device: torch.device | str = "cpu", progress: bool = True) -> dict[str, torch.Tensor]:
    if tokens < seq_len:
        raise ValueError(f"calibration needs at least one sequence ({seq_len} tokens), got {tokens}")
    device = torch.device(device)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def accumulate(key: str, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).to(torch.float32)
        if key not in sums:
            sums[key] = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=device)
            counts[key] = 0
        sums[key] += (x.T @ x).double()
        counts[key] += x.shape[0]

    hooks, sites = [], {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            site = f"{name.rsplit('.', 1)[0]}.qkv" if name.endswith((".c_q", ".c_k", ".c_v")) else name
            if site not in sites.values():
                hooks.append(module.register_forward_pre_hook(lambda m, a, s=site: accumulate(s, a[0])))
            sites[f"{name}.weight"] = site
    tied = tied_embeddings(model) if hasattr(model, "head") else []
    if tied:  # the tied embedding is the output layer: its input is the final hidden state
        sites.update((name, "head") for name in tied)
        original_head = model.head

        def head(h: torch.Tensor) -> torch.Tensor:
            accumulate("head", h)
            return original_head(h)

        model.head = head
    stream = TokenStream(train_files, model.vocab_size)
    was_training = model.training
    model.eval().to(device)
    n_seqs = tokens // seq_len
    try:
        with progress_bar(progress, total=n_seqs * seq_len, desc="calibrate", unit="tok") as bar:
            for i in range(0, n_seqs, batch_seqs):
                b = min(batch_seqs, n_seqs - i)
                x = stream.take(b * seq_len).to(device=device, dtype=torch.int64).reshape(b, seq_len)
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    model.logits(x)
                bar.update(b * seq_len)
    finally:
        for h in hooks:
            h.remove()
        if "head" in model.__dict__:
            del model.head
        model.train(was_training)
    hessians = {site: (2.0 * sums[site] / counts[site]).float().cpu() for site in sums}
    return {name: hessians[site] for name, site in sites.items() if site in hessians}


def collect_sensitivity(model: torch.nn.Module, train_files: str, tokens: int, seq_len: int, skip: int = 0,
                        device: torch.device | str = "cpu", progress: bool = True) -> dict[str, torch.Tensor]:
    """How much the training loss rises per squared unit of error in each weight, for every
    matrix the model has: ``S = (seq_len / 2) E[g^2]``, the diagonal empirical Fisher of the
    mean token loss, from one gradient per sequence of training data (after ``skip`` tokens).

    Why: a quantizer's error ``d`` costs about ``sum(S * d^2)`` nats per token, in the same unit
    for every tensor, so an allocator can compare a byte spent on one matrix with a byte spent
    on another. GPTQ's Hessian ``2 X^T X`` weighs errors within one layer only: it cannot see
    that an embedding row of a frequent token, or a layer near the output, matters more. (One
    gradient per sequence averages ``seq_len`` tokens: ``E[g_seq^2]`` is the token Fisher over
    ``seq_len`` when token gradients are uncorrelated, hence the factor.)"""
    n_seqs = tokens // seq_len
    if n_seqs < 1:
        raise ValueError(f"sensitivity needs at least one sequence ({seq_len} tokens), got {tokens}")
    device = torch.device(device)
    params = {n: p for n, p in model.named_parameters() if p.ndim == 2 and p.requires_grad}
    sums = {n: torch.zeros(p.shape, dtype=torch.float64, device=device) for n, p in params.items()}
    stream = TokenStream(train_files, model.vocab_size)
    stream.take(skip)
    was_training = model.training
    model.train().to(device)
    try:
        with progress_bar(progress, total=n_seqs * seq_len, desc="sensitivity", unit="tok") as bar:
            for _ in range(n_seqs):
                chunk = stream.take(seq_len + 1).to(device=device, dtype=torch.int64)
                model.zero_grad(set_to_none=True)
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    loss = model(chunk[:-1][None], chunk[1:][None])
                loss.backward()
                for n, p in params.items():
                    if p.grad is not None:
                        sums[n] += p.grad.double().square()
                bar.update(seq_len)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return {n: (s * (seq_len / (2.0 * n_seqs))).float().cpu() for n, s in sums.items()}


def heldout_tokens(train_files: str, vocab_size: int, skip: int, count: int) -> torch.Tensor:
    """``count`` training tokens after the first ``skip`` (those calibration read): what the
    build scores its final contenders on (never validation tokens)."""
    stream = TokenStream(train_files, vocab_size)
    stream.take(skip)
    return stream.take(count)


def save_hessians(path: str | os.PathLike, hessians: dict[str, torch.Tensor], *, overwrite: bool = False) -> None:
    """One file; shared Hessians (q/k/v) are stored once thanks to torch's storage sharing.
    (Sensitivities are saved the same way, to their own file.)"""
    import io

    buf = io.BytesIO()
    torch.save(hessians, buf)
    atomic_write_bytes(Path(path), buf.getvalue(), overwrite=overwrite)


def load_hessians(path: str | os.PathLike, what: str = "calibration") -> dict[str, torch.Tensor]:
    """A calibration file (name -> 2-D tensor: Hessians, or sensitivities with ``what``),
    loaded with ``weights_only`` from a regular file; every tensor must be finite."""
    p = Path(path)
    with open_regular(p, MAX_CHECKPOINT_BYTES) as f:
        try:
            obj = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:  # corrupt or foreign file
            raise ValueError(f"{p}: not a {what} file ({type(e).__name__})") from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) and v.ndim == 2
                                            and v.is_floating_point() and bool(torch.isfinite(v).all())
                                            for k, v in obj.items()):
        raise ValueError(f"{p}: not a {what} file (expected name -> finite 2-D tensor)")
    return obj
