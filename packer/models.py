"""``--model``: find the user's model builder (model/builders.py) and make it importable by name.

Three spellings, all resolved to a ``module:function`` name that checkpoints, containers and
records scripts store:

* ``path/to/model.py:build``: the file is loaded as the top-level module ``model`` (its stem,
  ``model.builders.load_module_file``), and its source ships in the bundle under that name;
* ``name``: an entry point of the group ``golfpack.models`` (``pkg.module:build``);
* ``pkg.module:build``: an importable module, named directly.

Inside an artifact or records script the module is one of the bundle's.
"""
from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

from ..model.anatomy import ModelBuilderError

from ..model.builders import BUILDER, load_builder, load_module_file
from ..model.checkpoint import Checkpoint, load_checkpoint
from ..model.console import printable

ENTRY_POINT_GROUP = "golfpack.models"


def resolve_model(text: str) -> str:
    """The ``module:function`` builder ``--model TEXT`` names, importable from now on."""
    path, colon, function = text.rpartition(":")
    if colon and path.endswith(".py"):
        ref = f"{load_module_file(Path(path))}:{function}"
    elif not colon:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == text]
        if not found:
            raise ModelBuilderError(f"--model {text!r}: not PATH.py:function, module:function, or an entry point "
                                    f"of '{ENTRY_POINT_GROUP}'")
        ref = found[0].value.replace(" ", "")
    else:
        ref = text
    if not BUILDER.fullmatch(ref):
        raise ModelBuilderError(f"--model {text!r}: the builder must be a function name after ':'")
    load_builder(ref)  # fails now, with the name, if the function is missing
    return ref


def trusted_builders() -> tuple[str, ...]:
    """The builders installed as ``golfpack.models`` entry points: installing a package is the
    user's choice, so a checkpoint may name one of these (or golfpack's GPT) without
    ``--model``. Read from the metadata only; nothing is imported."""
    return tuple(ep.value.replace(" ", "") for ep in entry_points(group=ENTRY_POINT_GROUP))


def open_checkpoint(path: str | Path, builder: str | None = None, overrides: tuple[str, ...] = ()) -> Checkpoint:
    """A checkpoint for the command line: ``builder`` is ``--model`` (resolved), and without it
    the checkpoint's own builder must be golfpack's GPT or an installed entry point.
    ``overrides`` (``--set model.KEY=VALUE``) complete a plain state dict's model config, which
    starts from its module's ``DEFAULT_CONFIG`` (the GPT's: inferred from the weights), by the
    trainer's own conversion of model keys; a golfpack checkpoint records its config, and takes none.
    A training config inside the checkpoint is read by the trainer's reader (``TrainConfig.from_dict``)."""
    from ..trainer.config import ConfigError, TrainConfig, load_config

    ckpt = load_checkpoint(path, builder, trusted_builders())
    if ckpt.train_config:  # the trainer's reader, every key typed and bounded, before anything packs or runs it
        try:
            TrainConfig.from_dict(ckpt.train_config)
        except ConfigError as e:
            raise ValueError(f"{path}: its train_config: {printable(str(e))[:300]}") from None
    if not overrides:
        return ckpt

    if ckpt.meta.get("source") != "plain state dict":
        raise ValueError(f"{path}: --set is for a plain state dict's model config; this checkpoint records its own")
    bad = [o for o in overrides if not o.startswith("model.")]
    if bad:
        raise ValueError(f"--set {bad[0]!r:.60}: a checkpoint's --set takes model config keys, model.KEY=VALUE")
    base = TrainConfig(model_builder=ckpt.model_builder, model=dict(ckpt.model_config))
    ckpt.model_config = load_config(None, overrides, base=base).model
    return ckpt
