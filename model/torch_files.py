"""The one reader of ``torch.save`` files: checkpoints (with their resume state) and calibration
and sensitivity files. Every ``torch.load`` in golfpack goes through :func:`load_torch_file`.

``weights_only`` stops the pickle from calling anything, not from describing a bomb: a 1 KB
file can hold a tensor view of 30,000 x 30,000 elements over one stored float (stride 0), or
one list referenced 65,536 times through the pickle's memo, which a reader that walks or copies
each reference pays for 65,536 times. So before any caller sees it, the loaded object is
walked once, bounded in nodes and depth:

* containers are dicts with string (or, in an optimizer's state, integer) keys, lists and tuples; leaves are None, bool, int, float,
  str and tensors; nothing else;
* no container is reached twice (shared through the memo) and none is nested deeper than
  :data:`MAX_DEPTH`;
* every tensor is dense: strided, contiguous, at offset 0 of a storage of exactly its size
  (no stride-0 or partial views); the same tensor may appear more than once (q, k and v share
  their Hessian), but all references together hold at most :data:`MAX_EXPANSION` times the
  file's bytes.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from .files import open_regular

MAX_NODES = 1 << 20  # containers and leaves visited, shared tensors counted per reference
MAX_DEPTH = 32
MAX_KEY_CHARS = 1024
MAX_STR_CHARS = 1 << 20
MAX_EXPANSION = 16  # tensor bytes over all references, per byte of file
EXPANSION_SLACK = 1 << 20


class TorchFileError(ValueError):
    """A ``torch.save`` file golfpack refuses to read."""


def load_torch_file(path: str | os.PathLike, limit: int, what: str) -> object:
    """The object a ``torch.save`` file of at most ``limit`` bytes holds (a regular file, never
    followed through a symlink), loaded with ``weights_only`` and checked by :func:`check_tree`;
    ``what`` names the file in messages."""
    path = Path(path)
    with open_regular(path, limit) as f:  # read from the open file: never a second copy of its bytes in memory
        size = os.fstat(f.fileno()).st_size
        try:
            with warnings.catch_warnings():  # torch warns about a file's pickle protocol: the file's business
                warnings.simplefilter("ignore")
                obj = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for a corrupt or foreign file
            raise TorchFileError(f"{path}: not a loadable {what} ({type(e).__name__}: {str(e)[:120]})") from None
    check_tree(obj, size, f"{path}")
    return obj


def check_tree(obj: object, file_bytes: int, where: str) -> None:
    """Refuse ``obj`` unless it is the plain, dense, unshared tree the module docstring describes."""
    seen: set[int] = set()
    nodes = 0
    tensor_bytes = 0
    budget = MAX_EXPANSION * file_bytes + EXPANSION_SLACK
    stack: list[tuple[object, int]] = [(obj, 0)]
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise TorchFileError(f"{where}: more than {MAX_NODES:,} objects")
        if isinstance(value, torch.Tensor):
            _check_dense(value, where)
            tensor_bytes += value.numel() * value.element_size()
            if tensor_bytes > budget:
                raise TorchFileError(f"{where}: its tensors hold more than {MAX_EXPANSION} times the file's "
                                     f"{file_bytes:,} bytes (shared or repeated tensors)")
        elif value is None or isinstance(value, (bool, int, float)):
            continue
        elif isinstance(value, str):
            if len(value) > MAX_STR_CHARS:
                raise TorchFileError(f"{where}: a string of more than {MAX_STR_CHARS:,} characters")
        elif isinstance(value, (dict, list, tuple)):
            if id(value) in seen:
                raise TorchFileError(f"{where}: an object is shared between two places (refused: a file's "
                                     "structure is a tree)")
            seen.add(id(value))
            if depth >= MAX_DEPTH:
                raise TorchFileError(f"{where}: nested more than {MAX_DEPTH} deep")
            if isinstance(value, dict):
                if not all(isinstance(k, str) and len(k) <= MAX_KEY_CHARS or type(k) is int for k in value):
                    raise TorchFileError(f"{where}: a table whose keys are not strings of at most "
                                         f"{MAX_KEY_CHARS} characters or integers (an optimizer's state)")
                stack.extend((v, depth + 1) for v in value.values())
            else:
                stack.extend((v, depth + 1) for v in value)
        else:
            raise TorchFileError(f"{where}: holds a {type(value).__name__}, which no golfpack file does")


def _check_dense(t: torch.Tensor, where: str) -> None:
    if t.layout != torch.strided or t.is_quantized or t.is_complex():
        raise TorchFileError(f"{where}: a tensor that is not a plain dense one ({t.layout}, {t.dtype})")
    if not t.is_contiguous() or t.storage_offset() != 0 or \
            t.untyped_storage().nbytes() != t.numel() * t.element_size():
        raise TorchFileError(f"{where}: a tensor of shape {list(t.shape)} that is a view (strided, offset or "
                             "over a larger storage) rather than its own storage")
