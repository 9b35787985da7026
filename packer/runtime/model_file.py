"""Container -> model: the one path by which a coded model file becomes a model.

An artifact's ``eval`` and ``verify``, a records script's evaluation and ``golfpack eval`` on
a ``.gpak`` all call :func:`decode_model`. The container is read as data (bounded, no
pickle); the builder it names runs only if the caller's ``allow`` accepts it, because a file
never chooses what code runs; the model is built at the container's size (checked before
anything is allocated) and the weights decoded by the caller's decoder table.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Mapping

import torch

from ...codec.decoders.chain import DecoderSpec, decode_container
from ...codec.decoders.container import read_container
from ...model.anatomy import ModelBuilderError, load_weights
from ...model.builders import build_model, builder_of
from ...model.console import printable
from ...model.files import read_regular


def decode_model(data: bytes, table: Mapping[str, DecoderSpec], allow: Callable[[str], str | None],
                 source: str) -> tuple[torch.nn.Module, float]:
    """The model coded in ``data`` and the seconds its decode took (the challenge counts them in
    the evaluation time). ``allow(ref)`` returns why the builder ``ref`` may not run, or None."""
    t0 = time.perf_counter()
    container = read_container(data)
    ref, config = builder_of(container.meta)
    refused = allow(ref)
    if refused is not None:
        raise ModelBuilderError(f"{source}: {refused}")
    model = build_model(ref, config, container.numel)
    state = decode_container(container, table)
    seconds = time.perf_counter() - t0
    return load_weights(model, state, source), seconds


def decode_model_file(path: str | os.PathLike, table: Mapping[str, DecoderSpec], builders: tuple[str, ...], *,
                      limit: int) -> torch.nn.Module:
    """The model coded in the file at ``path`` (a regular file of at most ``limit`` bytes), whose
    builder must be one of ``builders``. (The limit is the caller's: importing the artifact
    format here would ship it twice, since every artifact's ``__main__.py`` inlines it.)"""
    def allow(ref: str) -> str | None:
        return None if ref in builders else f"built by '{printable(ref)}', not by {' or '.join(builders)}"

    return decode_model(read_regular(path, limit), table, allow, str(path))[0]
