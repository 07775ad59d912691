"""Config machinery: defaults < file < flags, choices, bounds, types, unknown keys."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from training.config import add_flags, apply_overrides, build, flag_overrides, from_dict, to_dict
from training.errors import ConfigError
from training.models.classifier import ClassifierConfig
from training.models.forecaster import ForecasterConfig
from training.models.gan import GanConfig


def test_unknown_choice_lists_valid_values() -> None:
    with pytest.raises(
        ConfigError, match=r"activation: unknown value 'swish'.*relu, sigmoid, tanh"
    ):
        apply_overrides(ClassifierConfig(), {"activation": "swish"}, "test")
    with pytest.raises(ConfigError, match=r"cell: unknown value 'transformer'.*rnn, lstm, gru"):
        apply_overrides(ForecasterConfig(), {"cell": "transformer"}, "test")
    with pytest.raises(ConfigError, match=r"optimizer: .*sgd, adam, rmsprop"):
        apply_overrides(GanConfig(), {"optimizer": "lbfgs"}, "test")


def test_unknown_key_lists_valid_options() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown option 'activaton'; valid options: .*activation"
    ):
        apply_overrides(ClassifierConfig(), {"activaton": "relu"}, "test")


def test_bounds_and_types() -> None:
    with pytest.raises(ConfigError, match="dropout: 1.5 is above the maximum"):
        apply_overrides(ClassifierConfig(), {"dropout": 1.5}, "t")
    with pytest.raises(ConfigError, match="epochs: 'many' is not a valid int"):
        apply_overrides(ClassifierConfig(), {"epochs": "many"}, "t")
    with pytest.raises(ConfigError, match="conv_channels: 0 is below the minimum"):
        apply_overrides(ClassifierConfig(), {"conv_channels": "16,0"}, "t")
    with pytest.raises(ConfigError, match="name: 'Bad Name'"):
        apply_overrides(ClassifierConfig(), {"name": "Bad Name"}, "t")


def test_file_then_flags(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('activation = "tanh"\nconv_channels = [8, 16]\nepochs = 3\n')
    cfg = build(ClassifierConfig, toml, {"epochs": "5"})
    assert cfg.activation == "tanh" and cfg.conv_channels == (8, 16) and cfg.epochs == 5
    yml = tmp_path / "c.yaml"
    yml.write_text("cell: gru\nhidden_size: 7\nresidual: false\n")
    fcfg = build(ForecasterConfig, yml, {})
    assert (fcfg.cell, fcfg.hidden_size, fcfg.residual) == ("gru", 7, False)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        build(ClassifierConfig, tmp_path / "missing.toml", {})
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = = 3")
    with pytest.raises(ConfigError, match="is not valid"):
        build(ClassifierConfig, bad, {})
    other = tmp_path / "c.ini"
    other.write_text("x")
    with pytest.raises(ConfigError, match="use a .toml, .yaml"):
        build(ClassifierConfig, other, {})


def test_flags_are_generated_from_fields() -> None:
    parser = argparse.ArgumentParser()
    add_flags(parser, ForecasterConfig)
    ns = parser.parse_args(["--cell", "rnn", "--clip-norm", "0", "--seed", "4"])
    cfg = build(ForecasterConfig, None, flag_overrides(ns))
    assert (cfg.cell, cfg.clip_norm, cfg.seed) == ("rnn", 0.0, 4)


def test_round_trip() -> None:
    cfg = apply_overrides(ClassifierConfig(), {"hidden": "64,32", "pool": "avg"}, "t")
    assert from_dict(ClassifierConfig, to_dict(cfg)) == cfg
