"""Training configuration: one dataclass, defaults = the challenge baseline recipe.

Resolution order (later wins): defaults, a TOML/JSON file (top-level keys for training,
a ``[model]`` table for the model's config), then ``key=value`` overrides from the command
line (``model.num_layers=4``). The model is golfpack's GPT unless ``model_builder`` names
another (``module:function``, model/builders.py); its config then starts from that module's
``DEFAULT_CONFIG``. The resolved config is logged at start and saved in every checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..codec.decoders.config import coerce
from ..model.builders import GPT_BUILDER, default_config, split_builder
from ..model.config import GPTConfig
from ..model.eval_settings import EvalSettings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(ValueError):
    """A config file or override is malformed or names an unknown key."""


@dataclass
class TrainConfig:
    # data
    train_files: str = "data/datasets/fineweb10B_sp1024/fineweb_train_*.bin"
    val_files: str = "data/datasets/fineweb10B_sp1024/fineweb_val_*.bin"
    tokenizer: str = "data/tokenizers/fineweb_1024_bpe.model"
    out_dir: str = "runs/golfpack"
    log_file: str = ""  # "": out_dir/train.log
    seed: int = 1337
    device: str = "auto"  # auto | cpu | cuda
    # length and batch
    iterations: int = 20000
    max_wallclock_seconds: float = -1.0  # <0: 600 on CUDA, none on CPU; 0: none
    train_batch_tokens: int = 524_288
    train_seq_len: int = 1024
    grad_accum_steps: int = 0  # 0: 8 // world_size, as the challenge (a world size that does not divide 8 is refused)
    # schedule
    lr_warmup_steps: int = 0
    warmdown_iters: int = 1200
    compile_warmup_steps: int = 20  # steps to prime torch.compile, then weights are restored
    # optimizers
    matrix_lr: float = 0.04
    scalar_lr: float = 0.04
    tied_embed_lr: float = 0.05
    embed_lr: float = 0.6
    head_lr: float = 0.008
    muon_momentum: float = 0.95
    muon_momentum_warmup_start: float = 0.85
    muon_momentum_warmup_steps: int = 500
    muon_backend_steps: int = 5
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 1e-8
    weight_decay: float = 0.0  # decoupled, on matrices
    grad_clip_norm: float = 0.0
    ema_decay: float = 0.0  # 0: off; else EMA weights are exported
    # quantization-aware training
    qat_start_frac: float = 1.0  # fraction of training (steps or wall clock) after which QAT is on; 1: off
    qat_rules: list = field(default_factory=list)  # [[glob, bits, clip], ...], resolved from a pipeline spec
    qat_noise: float = 0.0  # 0: the forward rounds to the grid; w > 0: adds uniform noise w grid steps wide instead
    # budget-aware QAT (trainer/qat.py): >0: at the switch, train toward the grids that fill this many bytes
    # of coded weights (the container), allocated by predicted loss on the weights of that moment
    qat_budget: int = 0
    qat_pipeline: dict = field(default_factory=dict)  # the spec the plan allocates under (a file's table); {}: default
    qat_refresh: int = 0  # plan again this many times, evenly spaced between the switch and the end
    qat_calib_tokens: int = 16_384  # training tokens for each plan's Hessians, and as many for its sensitivities
    qat_embedding: bool = True  # budget-aware QAT: also fake-quantize the embedding/head (false: train them float)
    # CUDA
    compile: bool = True
    # logging and evaluation
    val_loss_every: int = 1000
    train_log_every: int = 200
    val_batch_seqs: int = 32
    val_max_tokens: int = 0  # 0: the whole validation set
    # calibration for GPTQ after training
    calib_tokens: int = 0  # 0: no calibration pass
    sens_tokens: int = 32_768  # with calibration: tokens for the loss sensitivities (--fill's measure); 0: none
    score_tokens: int = 32_768  # records script: held-out training tokens that score fill's contenders; 0: none
    calib_reserve_seconds: float = 0.0  # taken off the wall-clock cap so calibration fits inside it (records: 4)
    model_builder: str = GPT_BUILDER
    model: dict = field(default_factory=lambda: GPTConfig().to_dict())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def eval_settings(self, stride: int | None = None) -> EvalSettings:
        """Validation as this run scores it: its training window, its batch."""
        return EvalSettings(self.train_seq_len, stride, self.val_batch_seqs)

    @property
    def vocab_size(self) -> int:
        return int(self.model["vocab_size"])

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        cfg = cls()
        apply_mapping(cfg, d, "")
        return cfg


def _convert(current: Any, value: Any, key: str) -> Any:
    """A new value for ``key``, of the type its current value has (``coerce``: the one rule
    shared with stage parameters)."""
    try:
        return coerce(value, type(current), key)
    except ValueError as e:
        raise ConfigError(f"config key {e}") from None


def _literal(value: Any) -> Any:
    """A model key the builder has no default for: ``4`` -> 4, ``0.5`` -> 0.5, ``true`` ->
    True, anything else stays a string."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def set_builder(cfg: TrainConfig, ref: str, where: str) -> None:
    """Switch the model builder; a new builder's config starts from its own defaults."""
    try:
        split_builder(ref)
        if ref != cfg.model_builder:
            cfg.model = GPTConfig().to_dict() if ref == GPT_BUILDER else default_config(ref)
    except (ValueError, ImportError) as e:
        raise ConfigError(f"model_builder{where}: {e}") from None
    cfg.model_builder = ref


def apply_model(cfg: TrainConfig, value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise ConfigError(f"'model'{where} must be a table")
    model = dict(cfg.model)
    known = cfg.model_builder == GPT_BUILDER or bool(model)  # a builder without defaults takes any key
    for mk, mv in value.items():
        if mk not in model and known:
            raise ConfigError(f"unknown model config key '{mk}'{where}")
        model[mk] = _convert(model[mk], mv, f"model.{mk}") if mk in model else _literal(mv)
    if cfg.model_builder == GPT_BUILDER:
        try:
            model = GPTConfig(**model).to_dict()
        except (ValueError, TypeError) as e:
            raise ConfigError(f"model config{where}: {e}") from None
    if not isinstance(model.get("vocab_size"), int):
        raise ConfigError(f"model config{where}: needs an integer 'vocab_size'")
    cfg.model = model


def apply_mapping(cfg: TrainConfig, d: dict[str, Any], source: str) -> None:
    where = f" in {source}" if source else ""
    if "model_builder" in d:  # first: it decides which model keys exist
        set_builder(cfg, str(d["model_builder"]), where)
    for key, value in d.items():
        if key == "model_builder":
            continue
        if key == "model":
            apply_model(cfg, value, where)
            continue
        if key not in {f.name for f in dataclasses.fields(cfg)}:
            raise ConfigError(f"unknown config key '{key}'{where}")
        setattr(cfg, key, _convert(getattr(cfg, key), value, key))
        if key == "qat_rules":  # checked as read, by the rules' one reader (bounded in count and length)
            from .qat import parse_rules

            try:
                parse_rules(cfg.qat_rules)
            except ValueError as e:
                raise ConfigError(f"qat_rules{where}: {e}") from None


def load_config(path: str | Path | None = None, overrides: Iterable[str] = (),
                base: TrainConfig | None = None) -> TrainConfig:
    cfg = base or TrainConfig()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: no such config file")
        try:
            text = p.read_text(encoding="utf-8")
            doc = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{p}: not valid {'JSON' if p.suffix == '.json' else 'TOML'} ({e})") from None
        apply_mapping(cfg, doc, str(p))
    top: dict[str, Any] = {}
    model: dict[str, Any] = {}
    for item in overrides:
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"override '{item}' must be key=value")
        if key.startswith("model."):
            model[key[6:]] = value
        else:
            top[key] = value
    if model:  # together: model fields are checked against each other (num_heads vs num_kv_heads)
        top["model"] = model
    apply_mapping(cfg, top, "overrides")
    return cfg
