"""Hyper-parameters as frozen dataclasses, overridable from a TOML/YAML file and flags.

Every family config (`ClassifierConfig`, `ForecasterConfig`, `GanConfig`) is a flat
frozen dataclass that extends `CommonConfig`. Fields carry metadata:

- ``help``: one line shown by ``--help``;
- ``choices``: the valid values of a string option (an unknown value is refused with
  the list of valid ones);
- ``min`` / ``max``: inclusive numeric bounds.

Precedence: dataclass defaults < config file < command-line flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from training.errors import ConfigError

C = TypeVar("C", bound="CommonConfig")

OPTIMIZERS = ("sgd", "adam", "rmsprop")
DEVICES = ("auto", "cpu", "cuda")


def opt(
    default: Any,
    help: str,
    *,
    choices: Sequence[str] | None = None,
    min: float | None = None,
    max: float | None = None,
) -> Any:
    """A dataclass field with the metadata the validator and flag builder read."""
    meta: dict[str, Any] = {"help": help}
    if choices is not None:
        meta["choices"] = tuple(choices)
    if min is not None:
        meta["min"] = min
    if max is not None:
        meta["max"] = max
    if isinstance(default, list | dict):
        raise TypeError("use tuples for sequence defaults so configs stay immutable")
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class CommonConfig:
    """Options every family shares: run control, optimizer, regularisation."""

    name: str = opt("model", "model name in the repository (lowercase, digits, '-')")
    seed: int = opt(0, "random seed for data splits, initialisation and batches", min=0)
    epochs: int = opt(30, "maximum number of epochs", min=1)
    batch_size: int = opt(64, "mini-batch size", min=1)
    device: str = opt("auto", "where to train: auto = cuda if available", choices=DEVICES)
    optimizer: str = opt("adam", "optimizer", choices=OPTIMIZERS)
    lr: float = opt(1e-3, "learning rate", min=0.0)
    momentum: float = opt(0.9, "SGD momentum / RMSProp momentum", min=0.0, max=1.0)
    beta1: float = opt(0.9, "Adam beta1", min=0.0, max=1.0)
    weight_decay: float = opt(0.0, "L2 weight decay", min=0.0)
    patience: int = opt(8, "early stopping: epochs without val improvement (0 = off)", min=0)
    val_fraction: float = opt(
        0.15, "share of the training data held out for validation", min=0.0, max=0.5
    )
    test_fraction: float = opt(
        0.15, "share of the data held out for the test report", min=0.01, max=0.5
    )
    checkpoint_dir: str = opt("runs", "where checkpoints are written (<dir>/<name>/)")
    progress: bool = opt(True, "show progress bars with the live loss")
    threads: int = opt(
        1, "CPU threads for torch (0 = torch's default); tiny models train fastest on one", min=0
    )


def validate(cfg: CommonConfig) -> None:
    """Check choices, bounds and the model name; raise `ConfigError` naming the field."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        choices = f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(
                f"{f.name}: unknown value {value!r}; valid values: {', '.join(choices)}"
            )
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int | float):
                continue
            lo, hi = f.metadata.get("min"), f.metadata.get("max")
            if lo is not None and v < lo:
                raise ConfigError(f"{f.name}: {v} is below the minimum {lo}")
            if hi is not None and v > hi:
                raise ConfigError(f"{f.name}: {v} is above the maximum {hi}")
    import re

    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", cfg.name):
        raise ConfigError(
            f"name: {cfg.name!r} is not a valid model name; use lowercase letters, digits "
            "and '-', starting with a letter or digit (e.g. 'digits-cnn')"
        )


def _field_types(cls: type[CommonConfig]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(name: str, typ: Any, value: Any) -> Any:
    """Convert a value from a file (already typed) or a flag (a string) to `typ`."""
    origin = typing.get_origin(typ)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("", "none", "null")):
            return None
        return _coerce(name, args[0], value)
    if origin is tuple:
        (item,) = {a for a in typing.get_args(typ) if a is not Ellipsis}
        if isinstance(value, str):
            parts = [p for p in value.replace(" ", "").split(",") if p]
        elif isinstance(value, list | tuple):
            parts = list(value)
        else:
            parts = [value]
        return tuple(_coerce(name, item, p) for p in parts)
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typ is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if typ is str:
            if not isinstance(value, str | int | float):
                raise ValueError
            return str(value)
    except ValueError:
        pass
    else:
        raise ConfigError(f"{name}: unsupported option type {typ}")
    tname = getattr(typ, "__name__", str(typ))
    raise ConfigError(f"{name}: {value!r} is not a valid {tname}")


def apply_overrides(cfg: C, overrides: Mapping[str, Any], source: str) -> C:
    """Return `cfg` with `overrides` applied; unknown keys are refused with the valid list."""
    types_ = _field_types(type(cfg))
    known = {f.name for f in fields(cfg)}
    changes: dict[str, Any] = {}
    for raw_key, value in overrides.items():
        key = raw_key.replace("-", "_")
        if key not in known:
            raise ConfigError(
                f"{source}: unknown option {raw_key!r}; valid options: {', '.join(sorted(known))}"
            )
        changes[key] = _coerce(key, types_[key], value)
    new = dataclasses.replace(cfg, **changes)
    validate(new)
    return new


def load_file(path: Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) config file into a flat mapping."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"config file {path}: use a .toml, .yaml, .yml or .json file")
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a table of options")
    return data


def add_flags(parser: argparse.ArgumentParser, cls: type[CommonConfig]) -> None:
    """Add one ``--flag`` per config field; values stay strings until `apply_overrides`."""
    types_ = _field_types(cls)
    group = parser.add_argument_group(f"{cls.__name__} options")
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_ = f.metadata.get("help", "")
        if "choices" in f.metadata:
            help_ += f" ({'|'.join(f.metadata['choices'])})"
        default = f.default
        if isinstance(default, tuple):
            default = ",".join(str(x) for x in default)
        typ = types_[f.name]
        if typing.get_origin(typ) is tuple:
            help_ += " (comma-separated)"
        help_ += f" [default: {default}]"
        group.add_argument(flag, dest=f"cfg__{f.name}", default=None, metavar="V", help=help_)


def flag_overrides(ns: argparse.Namespace) -> dict[str, Any]:
    """The config fields the user set on the command line."""
    return {
        k.removeprefix("cfg__"): v
        for k, v in vars(ns).items()
        if k.startswith("cfg__") and v is not None
    }


def build(cls: type[C], config_file: Path | None, flags: Mapping[str, Any]) -> C:
    """Defaults, then the file, then flags; validated."""
    cfg = cls()
    if config_file is not None:
        cfg = apply_overrides(cfg, load_file(config_file), str(config_file))
    cfg = apply_overrides(cfg, flags, "command line")
    validate(cfg)
    return cfg


def to_dict(cfg: CommonConfig) -> dict[str, Any]:
    """A JSON-friendly dict of the config (tuples become lists)."""
    data: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(cfg)))
    return data


def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
    """Rebuild a config saved with `to_dict` (e.g. from a checkpoint)."""
    return apply_overrides(cls(), data, "checkpoint config")
