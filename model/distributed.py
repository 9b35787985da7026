"""Process-group setup from torchrun's environment: NCCL on CUDA, gloo on CPU."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_from_env(device: str | None = None) -> DistContext:
    """Join the process group that torchrun describes (RANK/WORLD_SIZE/LOCAL_RANK), if any.

    ``device`` forces ``cpu`` or ``cuda``; by default CUDA is used when available.
    """
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but CUDA is not available")
    dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        if use_cuda:
            dist.init_process_group(backend="nccl", device_id=dev)
        else:
            dist.init_process_group(backend="gloo")
    return DistContext(rank, world, local, dev)


def share_text(ctx: DistContext, text: str | None) -> str:
    """Rank 0's ``text`` on every rank (others pass None): how a decision made once (a QAT
    grid plan) reaches all ranks unchanged, so their weights cannot drift apart."""
    if not ctx.distributed:
        return text or ""
    data = (text or "").encode() if ctx.is_main else b""
    size = torch.tensor([len(data)], dtype=torch.int64, device=ctx.device)
    dist.broadcast(size, src=0)
    buf = torch.zeros(int(size.item()), dtype=torch.uint8, device=ctx.device)
    if ctx.is_main:
        buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    dist.broadcast(buf, src=0)
    return buf.cpu().numpy().tobytes().decode()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def torchrun_command(nproc: int, *target: str) -> list[str]:
    """The command that runs ``target`` (a script, or ``-m module``) on ``nproc`` local processes:
    plain Python for one, torchrun (``torch.distributed.run --standalone``) for more. A script
    must be an absolute path: a relative name starting with ``-`` would be read as an option
    (``-c<code>``), and one is refused here."""
    if not (isinstance(nproc, int) and nproc >= 1):
        raise ValueError(f"--nproc must be a positive integer, got {nproc}")
    if target and target[0] != "-m" and not os.path.isabs(target[0]):
        raise ValueError(f"internal: the script to run must be an absolute path, got {target[0]!r}")
    if nproc == 1:
        return [sys.executable, *target]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *target]
