"""Config values, name globs and roles: the one conversion of a config or spec value to its
declared type, the one rule for which group of globs a tensor name falls in, and the one
spelling of the roles a pipeline rule may match instead (``role = ...``; what each tensor of a
model is, ``trainer/roles.py: tensor_roles``).

Shipped (an artifact's trainer reads its config and QAT rules with them), but no decoder needs
them, so they are not in ``base.py``, which every decoder imports.
"""
from __future__ import annotations

import fnmatch
import functools
import json
import re
from typing import Any, Iterable, Sequence

MATRIX, EMBEDDING, SMALL, BUFFER = "matrix", "embedding", "small", "buffer"  # the roles (see the docstring)
ROLES = (MATRIX, EMBEDDING, SMALL, BUFFER)
# A tied embedding's two roles, lookup and output head: calibration also measures the loss's
# sensitivity to each apart, under the embedding's name plus these suffixes
# (trainer/calibrate.py: sensitivities_of), and the fill prices them apart (codec/allocate.py: LossModel).
LOOKUP_PART, HEAD_PART = "#lookup", "#head"


@functools.lru_cache(maxsize=4096)
def glob_group(group: tuple[str, ...]) -> re.Pattern:
    """One regular expression for a group of shell-style globs (``fnmatch.fnmatchcase``'s
    meaning), compiled once: matching a name costs one regex call per group, not one compile
    per glob (fnmatch's own cache thrashes past 32,768 patterns)."""
    return re.compile("|".join(fnmatch.translate(p) for p in group) or "(?!)")


def first_match(name: str, patterns: Iterable[Sequence[str]]) -> int | None:
    """Index of the first group of shell-style globs that matches ``name`` (None if none does):
    the one rule for which pipeline rule, QAT grid or ledger class a tensor gets."""
    for i, group in enumerate(patterns):
        if glob_group(tuple(group)).match(name):
            return i
    return None


def coerce(value: Any, kind: type, key: str) -> Any:
    """A config or spec value (often a string from a command line) as the declared ``kind``:
    the one conversion for stage parameters, training and model configs."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool):
        return value
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        low = value.strip().lower()
        if kind is bool and low in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return low in ("1", "true", "yes", "on")
        if kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
        if kind in (list, dict):
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = None
            if isinstance(parsed, kind):
                return parsed
    raise ValueError(f"'{key}' must be {kind.__name__}, got {value!r}")
