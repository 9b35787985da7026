"""Numerics whose float32 results must not depend on the machine's thread count.

A blocked Cholesky, a randomized SVD or a matrix product may round differently when torch
splits it over another number of threads, and GPTQ turns such a last-bit difference into a
different symbol now and then: the same checkpoint would then code to other bytes under
``OMP_NUM_THREADS=1`` than under 2. The functions wrapped here run on one thread (they are
small per tensor; the model's forward passes, where the time goes, keep every thread).
"""
from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch

F = TypeVar("F", bound=Callable)


def one_thread(fn: F) -> F:
    """``fn`` run with torch on a single thread, the caller's thread count restored after."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        threads = torch.get_num_threads()
        if threads == 1:
            return fn(*args, **kwargs)
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return wrapper  # type: ignore[return-value]
