"""Learning-rate multiplier: linear warmup, then a linear warmdown to zero at the end.

The end is either the last step (step mode) or the wall-clock cap (time mode, as the
challenge: the warmdown covers the last ``warmdown_iters`` steps' worth of time at the
average step time so far).
"""
from __future__ import annotations


def lr_multiplier(step: int, elapsed_ms: float, iterations: int, warmup: int, warmdown: int,
                  max_wallclock_ms: float | None) -> float:
    mul = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    if warmdown <= 0:
        return mul
    if max_wallclock_ms is None:
        start = max(iterations - warmdown, 0)
        return mul * (max((iterations - step) / warmdown, 0.0) if start <= step < iterations else 1.0)
    warmdown_ms = warmdown * elapsed_ms / max(step, 1)
    remaining_ms = max(max_wallclock_ms - elapsed_ms, 0.0)
    return mul * (remaining_ms / max(warmdown_ms, 1e-9) if remaining_ms <= warmdown_ms else 1.0)


def progress_fraction(step: int, elapsed_ms: float, iterations: int, max_wallclock_ms: float | None) -> float:
    """How far through training we are, by steps or by the clock, whichever is further."""
    frac = step / max(iterations, 1)
    if max_wallclock_ms:
        frac = max(frac, elapsed_ms / max_wallclock_ms)
    return frac
