"""What every decoder shares: the error type, the tensor description, typed parameters and
the size limits.

The limits exist because a container is untrusted input: no decoder may allocate more than
the declared tensor needs, and no declaration may exceed these bounds (docs/container.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

MAX_NUMEL = 1 << 24  # elements in one tensor (16.7 M: an 8192 x 2048 embedding)
MAX_TOTAL_NUMEL = 1 << 27  # elements in one container (134 M: 1 bit each would fill 16 MB)
MAX_ELEMENTS_PER_BYTE = 64  # declared elements per container byte (0.125 bits each), plus a slack:
ELEMENT_SLACK = 1 << 20  # a container cannot make its decoders allocate far beyond its own size
MAX_ELEMENT_BYTES = 8  # widest intermediate per element (int64 symbols / fp64)
MAX_NAME_CHARS = 512  # a tensor name: printable characters only

# The dtypes a tensor may have, with their widths in bytes (the one dtype table): floats, which
# every tensor stage codes, and the integer and bool dtypes of a model's buffers (a mask, a
# step counter), which only the exact passthrough stores (``floats.py``: ``raw``).
FLOAT_WIDTH = {"float32": 4, "float16": 2, "bfloat16": 2}
DTYPE_WIDTH = {**FLOAT_WIDTH, "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint8": 1, "bool": 1}
DTYPES = tuple(DTYPE_WIDTH)

# The kinds of value handed between stages: float tensor -> integer symbols -> bytes.
TENSOR, SYMBOLS, BYTES = "tensor", "symbols", "bytes"
KINDS = (TENSOR, SYMBOLS, BYTES)


class DecodeError(ValueError):
    """A stream does not decode to what its manifest entry declares."""


@dataclass(frozen=True)
class TensorMeta:
    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def max_bytes(self) -> int:
        """Upper bound on any intermediate byte stream of this tensor."""
        return self.numel * MAX_ELEMENT_BYTES + 64


def param(params: Mapping[str, Any], key: str, kind: type, lo: int | float | None = None, hi: int | float | None = None):
    """A typed, range-checked parameter from a manifest entry."""
    if key not in params:
        raise DecodeError(f"missing parameter '{key}'")
    v = params[key]
    if kind is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if not isinstance(v, kind) or isinstance(v, bool) and kind is not bool:
        raise DecodeError(f"parameter '{key}' must be {kind.__name__}, got {type(v).__name__}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise DecodeError(f"parameter '{key}'={v} outside [{lo}, {hi}]")
    return v


def blob(blobs: Mapping[str, bytes], key: str) -> bytes:
    if key not in blobs:
        raise DecodeError(f"missing side stream '{key}'")
    return blobs[key]


def exact_size(out: bytes, size: int, leftover: bool = False) -> bytes:
    """A decompressor's output, which must be exactly the ``size`` its manifest entry declares."""
    if len(out) != size or leftover:
        raise DecodeError(f"decompressed to {len(out)}{'+' if leftover else ''} bytes, expected {size}")
    return out
