"""Typed run configuration: YAML files with `_base_` inheritance and dotted `key=value` overrides.

Every task config is a dataclass that subclasses :class:`RunConfig` and adds its own `model` and `data`
dataclasses. Loading is strict: an unknown key is an error that suggests the closest valid key (a typo
in a YAML file must never silently fall back to a default), and every value is checked against the field
type before any work starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from backbones.errors import UserError

T = TypeVar("T")

BASE_KEY = "_base_"


class ConfigError(UserError):
    """A config file, key or value is invalid; the message names it and says what was expected.

    Attributes:
        key: the dotted key the error is about, when there is one (lets the loader say whether the value
            came from a file or from the command line).
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class _Yaml12BoolLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 booleans: only true/false, never on/off/yes/no.

    YAML 1.1 (PyYAML's default) reads `amp: off` as False, so a documented string value such as
    `train.amp=off` failed as "expected a string, got False". Only the bool resolver changes; everything
    else is `yaml.safe_load`.
    """


_Yaml12BoolLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12BoolLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def parse_yaml(text: str) -> Any:
    """Parse YAML text safely with YAML 1.2 booleans (`off`, `no`, `on`, `yes` stay strings)."""
    return yaml.load(text, Loader=_Yaml12BoolLoader)  # a SafeLoader subclass: still safe_load


# Names other libraries use for our keys: "did you mean" looks at these too (timm, mmdet, Lightning).
KEY_ALIASES = {
    "learning_rate": "lr",
    "base_lr": "lr",
    "lr0": "lr",
    "wd": "weight_decay",
    "max_epochs": "epochs",
    "num_epochs": "epochs",
    "n_epochs": "epochs",
    "bs": "batch_size",
    "workers": "num_workers",
    "sched": "scheduler",
    "opt": "optimizer",
    "clip_grad": "grad_clip",
    "model_ema": "ema",
    "model_ema_decay": "ema_decay",
    "precision": "amp",
    "lr_mult": "backbone_lr_mult",
    "layer_decay_rate": "layer_decay",
    "T_0": "restart_epochs",
    "T_mult": "restart_mult",
    "cycle_mul": "restart_mult",
    "lr_cycle_mul": "restart_mult",
}


@dataclass
class TrainConfig:
    """Optimisation and loop settings shared by every task (section `train:` of a config)."""

    epochs: int = 10
    batch_size: int = 16
    num_workers: int = 2
    optimizer: str = "sgd"  # sgd | adamw (no weight decay on norm and bias parameters)
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False  # Nesterov momentum (optimizer=sgd with momentum > 0)
    weight_decay: float = 1e-4
    backbone_lr_mult: float = 1.0  # the backbone trains at lr * backbone_lr_mult; head, decoder, FPN at lr
    layer_decay: float = 1.0  # layer-wise lr decay: head lr, layer4 lr * decay, ..., stem lr * decay^5
    scheduler: str = "cosine"  # cosine | cosine_restarts | step | multistep | constant
    warmup_epochs: float = 0.0
    warmup_lr_ratio: float = 0.001  # warmup starts at lr * warmup_lr_ratio
    min_lr: float = 0.0  # cosine floor
    restart_epochs: int = 10  # cosine_restarts: length of the first cycle in epochs (T_0)
    restart_mult: int = 2  # cosine_restarts: each cycle is this many times longer than the last (T_mult)
    step_size: int = 30  # epochs between decays for scheduler=step
    milestones: list[int] = field(default_factory=list)  # epochs for scheduler=multistep
    gamma: float = 0.1
    amp: str = (
        "auto"  # auto | off | bf16 | fp16 (auto: fp16 on CUDA, bf16 on CPUs with native bf16, else off)
    )
    channels_last: bool = True  # NHWC: faster convs with oneDNN and cuDNN (docs/benchmarks.md, det/seg rows)
    grad_clip: float = 0.0  # max global grad norm; 0 disables
    accum_steps: int = 1
    ema: bool = False
    ema_decay: float = 0.9998
    best_metric: str = ""  # "" -> task.default_best_metric
    best_mode: str = ""  # "" -> task.best_mode; else max | min
    keep_top_k: int = 0
    early_stop_patience: int = 0  # evaluations without improvement before stopping; 0 disables
    seed: int = 0
    deterministic: bool = False
    sync_bn: bool = False
    find_unused_parameters: bool = False  # DDP option for models with branches unused in some steps
    eval_every: int = 1
    log_every: int = 20
    max_steps_per_epoch: int = 0  # optimizer steps per epoch; 0 = full epoch (small values for tests/demo)
    # CPU-time budget in minutes (training and evaluation, loader workers included): epochs 2-3 are
    # timed and the run trains as many epochs as fit, train.epochs at most, reviewed once a quarter of
    # the way in; 0 = train.epochs exactly
    cpu_minutes: float = 0.0
    # epochs between last.pt writes (also at every evaluation and the last epoch): short epochs of a
    # large model would otherwise spend a good part of their CPU writing model and optimizer state
    checkpoint_every: int = 1
    checkpoint_every_steps: int = 0  # also write last.pt every N optimizer steps (mid-epoch resume)
    tensorboard: bool = True  # log to TensorBoard when the package is installed
    plots: bool = True  # redraw curves.png (loss, lr, main metric) after every epoch


def validate_train_config(t: TrainConfig) -> None:
    """Refuse train values that would crash later or silently misbehave, naming the key and value."""
    positive = {
        "epochs": t.epochs,
        "batch_size": t.batch_size,
        "accum_steps": t.accum_steps,
        "eval_every": t.eval_every,
        "checkpoint_every": t.checkpoint_every,
        "log_every": t.log_every,
        "restart_epochs": t.restart_epochs,
        "restart_mult": t.restart_mult,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"train.{key}={value}: must be >= 1")
    for key in (
        "num_workers",
        "keep_top_k",
        "early_stop_patience",
        "max_steps_per_epoch",
        "checkpoint_every_steps",
    ):
        if getattr(t, key) < 0:
            raise ConfigError(f"train.{key}={getattr(t, key)}: must be >= 0")
    non_negative = {
        "lr": t.lr,
        "weight_decay": t.weight_decay,
        "min_lr": t.min_lr,
        "warmup_epochs": t.warmup_epochs,
        "warmup_lr_ratio": t.warmup_lr_ratio,
        "grad_clip": t.grad_clip,
        "cpu_minutes": t.cpu_minutes,
    }
    for key, value in non_negative.items():
        if not value >= 0:  # also catches NaN
            raise ConfigError(f"train.{key}={value}: must be >= 0")
    if not 0.0 <= t.momentum < 1.0:
        raise ConfigError(f"train.momentum={t.momentum}: must be in [0, 1)")
    if t.nesterov and t.optimizer != "sgd":
        raise ConfigError(f"train.nesterov=true: expected train.optimizer=sgd, got {t.optimizer!r}")
    if t.nesterov and t.momentum == 0:
        raise ConfigError(f"train.nesterov=true: expected train.momentum > 0, got {t.momentum}")
    for key in ("backbone_lr_mult", "layer_decay"):
        value = getattr(t, key)
        if not 0 < value < math.inf:  # also catches NaN; a frozen backbone is model.backbone.frozen_stages
            raise ConfigError(f"train.{key}={value}: must be a finite number > 0 (1.0 = train.lr)")
    if not t.gamma > 0:
        raise ConfigError(f"train.gamma={t.gamma}: must be > 0 (the factor each decay multiplies lr by)")
    if t.best_mode not in ("", "max", "min"):
        raise ConfigError(f"train.best_mode={t.best_mode!r}: expected max or min")
    if not 0.0 <= t.ema_decay < 1.0:
        raise ConfigError(f"train.ema_decay={t.ema_decay}: must be in [0, 1)")


@dataclass
class RunConfig:
    """Base of every task config: subclasses add `model` and `data` dataclass fields."""

    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = "runs/task"
    device: str = "auto"  # auto | cpu | cuda | cuda:N


# ----------------------------------------------------------------------------------------------- YAML


def shipped_config(path: str | Path) -> Path | None:
    """The copy of a `configs/...` file that ships with the package (package data of `tasks.configs`).

    Returns None when `path` does not start with `configs/` or names no shipped file.
    """
    parts = Path(path).parts
    if len(parts) < 2 or parts[0] != "configs":
        return None
    try:
        root = importlib.resources.files("tasks.configs")
    except ModuleNotFoundError:  # a checkout used without `pip install -e .`
        return None
    candidate = Path(str(root)).joinpath(*parts[1:])
    return candidate if candidate.is_file() else None


def find_config(path: str | Path) -> Path:
    """`path` if it exists, else the shipped config it names (`configs/detection/x.yaml` from any folder).

    An installed package leaves no configs/ folder in the user's working directory; the documented
    commands name `configs/...` paths, which then resolve to the installed copies.
    """
    path = Path(path)
    return path if path.exists() else shipped_config(path) or path


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = parse_yaml(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def deep_merge(base: dict, update: dict) -> dict:
    """Return `base` updated recursively by `update` (mappings merge, everything else replaces)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_yaml_with_bases(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a YAML file and merge its `_base_` files (a path or a list, relative to the file) under it.

    Later bases override earlier ones; the file's own keys override all bases. A `configs/...` path (the
    file or a base) that does not exist is looked up among the shipped configs (`find_config`).
    """
    path = find_config(path).resolve()
    if path in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path))
        raise ConfigError(f"circular _base_ chain: {chain}")
    data = _read_yaml(path)
    bases = data.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: {BASE_KEY} must be a path or a list of paths, got {bases!r}")
    merged: dict = {}
    for base in bases:
        base_path = path.parent / base
        if not base_path.exists():  # a user's config may build on a shipped one: `configs/...`
            base_path = shipped_config(base) or base_path
        merged = deep_merge(merged, load_yaml_with_bases(base_path, (*_seen, path)))
    return deep_merge(merged, data)


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply dotted `a.b.c=value` overrides; values are parsed as YAML (`1e-3`, `true`, `[1, 2]`)."""
    data = dict(data)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.lr=0.01)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} has an empty key part")
        try:
            value = parse_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"override {item!r}: {where} is a value, not a section")
            node[part] = dict(child)
            node = node[part]
        node[parts[-1]] = value
    return data


# ----------------------------------------------------------------------------------- typed conversion


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp` and return it converted (int -> float, list -> tuple)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _convert(value, option, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}", where)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}", where)
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            # A key that used to hold one value and is now a section says how to write it.
            hint = getattr(tp, "SCALAR_HINT", "").format(value=value)
            raise ConfigError(
                f"{where}: expected a mapping (section), got {value!r}" + (f"; {hint}" if hint else ""), where
            )
        return _from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list ({_type_name(tp)}), got {value!r}", where)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(
                    f"{where}: expected {len(args)} items ({_type_name(tp)}), got {value!r}", where
                )
            items = [_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_tp = args[0] if args else Any
            items = [_convert(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}", where)
        if args:
            return {
                _convert(_json_key(k, args[0]), args[0], where): _convert(v, args[1], f"{where}.{k}")
                for k, v in value.items()
            }
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}", where)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}", where)
        return value
    if tp is float:
        if isinstance(value, str):
            # PyYAML (YAML 1.1) reads `1e-3` as a string; accept any float literal for float fields.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}", where)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            # YAML turns `name: 1e-3` or `weights: null`-like scalars into non-strings; be explicit.
            raise ConfigError(f"{where}: expected a string, got {value!r} ({type(value).__name__})", where)
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}", where)
    return value


def _suggest(key: str, valid: list[str]) -> str:
    """'did you mean X?' from the valid keys and the aliases of other libraries; else list the keys."""
    aliases = {alias: target for alias, target in KEY_ALIASES.items() if target in valid}
    close = difflib.get_close_matches(key, [*valid, *aliases], n=1, cutoff=0.6)
    if close:
        return f"did you mean {aliases.get(close[0], close[0])!r}?"
    return f"valid keys here: {', '.join(sorted(valid))} (all keys: docs/configs.md)"


def _json_key(key: Any, key_type: Any) -> Any:
    """JSON (checkpoints, summaries) turns int mapping keys into strings: undo that for dict[int, ...]."""
    if key_type is int and isinstance(key, str) and key.lstrip("-").isdigit():
        return int(key)
    return key


def _from_dict(schema: type[T], data: dict, where: str = "") -> T:
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    kwargs = {}
    for key, value in data.items():
        full = f"{where}.{key}" if where else str(key)
        if key not in fields:
            moved = getattr(schema, "MOVED_KEYS", {}).get(key)
            if moved:
                raise ConfigError(f"config key {full!r} has moved: write it as {moved!r}", full)
            raise ConfigError(f"unknown config key {full!r}: {_suggest(str(key), list(fields))}", full)
        kwargs[key] = _convert(value, hints[key], full)
    return schema(**kwargs)


def config_from_dict(schema: type[T], data: dict) -> T:
    """Build a typed config from a plain dict, rejecting unknown keys and ill-typed values.

    Args:
        schema: the dataclass type (e.g. a RunConfig subclass).
        data: nested mapping as read from YAML.

    Raises:
        ConfigError: naming the dotted key, the expected type and the offending value.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"config must be a mapping, got {type(data).__name__}")
    return _from_dict(schema, data)


def config_to_dict(cfg: Any) -> dict:
    """Convert a (nested) config dataclass into plain dicts/lists (tuples become lists, YAML-safe)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(cfg)


def load_config(path: str | Path, overrides: list[str] | None = None, schema: type[T] = RunConfig) -> T:
    """Load a YAML config (with `_base_` files) plus dotted overrides into the typed `schema`.

    Args:
        path: YAML file.
        overrides: strings like `train.lr=0.01` or `model.backbone.arch=resnet34` (applied after the files).
        schema: the config dataclass to build.

    Returns:
        An instance of `schema`.

    Raises:
        ConfigError: for a missing file, bad YAML, an unknown key (with the closest valid key) or a
            value of the wrong type.
    """
    data = load_yaml_with_bases(path)
    data = apply_overrides(data, overrides)
    try:
        return config_from_dict(schema, data)
    except ConfigError as err:
        override = _override_for(err.key, overrides or [])
        where = f"command-line override {override!r}" if override else str(path)
        raise ConfigError(f"{where}: {err}", err.key) from None


def _override_for(key: str | None, overrides: list[str]) -> str | None:
    """The last override that set `key` (or a section holding it, or a key inside it), if any."""
    if not key:
        return None
    key = key.split("[", 1)[0]  # "data.mean[1]" is about the override of data.mean
    for item in reversed(overrides):
        name = item.split("=", 1)[0].strip()
        if name == key or key.startswith(name + ".") or name.startswith(key + "."):
            return item
    return None


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (loadable again with `load_config`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
