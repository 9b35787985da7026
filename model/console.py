"""What golfpack's entry points print, the same inside and outside an artifact: progress bars,
one-line errors and the challenge-style result lines.

tqdm is optional here: an artifact must never fail because a progress bar is missing, so
without tqdm, and wherever stderr is not a terminal, long work prints a phase line every
``PHASE_SECONDS`` instead of a bar.
"""
from __future__ import annotations

import sys
import time
from typing import Any

USER_ERRORS = (ValueError, OSError, RuntimeError)  # bad input, reported as one line


def one_line(e: BaseException) -> str:
    """The first line of an error's message (its type when it has none), safe for a terminal
    (:func:`printable`): a message can quote a file name or a field of a hostile file."""
    text = str(e).strip()
    return printable(text.split("\n")[0]) if text else type(e).__name__  # "\r" in a quoted name is shown, not split on


def printable(text: object) -> str:
    """``text`` safe for a terminal: control characters and escapes shown, not obeyed (for
    anything that comes from an artifact or another untrusted file)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


class _SilentBar:
    def __init__(self, total: float | None = None, initial: float = 0, **_: Any) -> None:
        self.total, self.n = total, initial

    def update(self, n: float = 1) -> None:
        self.n += n

    def set_postfix_str(self, *_: Any, **__: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "_SilentBar":
        return self

    def __exit__(self, *_: Any) -> None:
        pass


class _PhaseLines(_SilentBar):
    """Progress where no terminal shows a bar (a pipe, a log file, ``nohup``): one flushed line
    on stderr at most every ``PHASE_SECONDS``, with the count, the total and its last message;
    work that ends sooner prints nothing."""

    def __init__(self, total: float | None = None, initial: float = 0, desc: str = "", unit: str = "it",
                 **_: Any) -> None:
        super().__init__(total, initial)
        self.desc, self.unit, self.postfix = desc or "working", unit, ""
        self.start = self.last = time.monotonic()

    def set_postfix_str(self, s: str = "", *_: Any, **__: Any) -> None:
        self.postfix = s

    def update(self, n: float = 1) -> None:
        super().update(n)
        now = time.monotonic()
        if now - self.last >= PHASE_SECONDS:
            self.last = now
            total = f"/{self.total:,.0f}" if self.total else ""
            print(f"{self.desc}: {self.n:,.0f}{total} {self.unit} after {now - self.start:.0f}s"
                  + (f" ({printable(self.postfix)})" if self.postfix else ""), file=sys.stderr, flush=True)


PHASE_SECONDS = 10.0
PHASE_LINE = r"[\w .-]{1,40}: [\d,]+(/[\d,]+)? \w+ after \d+s( \(.*\))?"  # what a phase line looks like


def progress_bar(enabled: bool = True, **kwargs: Any):
    """A tqdm bar on a terminal; elsewhere (or without tqdm) phase lines every ``PHASE_SECONDS``;
    nothing when disabled."""
    if not enabled:
        return _SilentBar(**kwargs)
    try:
        from tqdm import tqdm
    except ImportError:
        return _PhaseLines(**kwargs)
    return tqdm(**kwargs) if sys.stderr.isatty() else _PhaseLines(**kwargs)


def format_result(d: dict) -> str:
    """The challenge's result lines: 8 decimals, tokens, bytes and the evaluation time."""
    return (f"val_loss:{d['val_loss']:.8f}\nval_bpb:{d['val_bpb']:.8f}\n"
            f"tokens:{d['tokens']} bytes:{d['bytes']} eval_time:{d['seconds']:.2f}s")
