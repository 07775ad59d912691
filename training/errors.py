"""Errors raised by the training side. Each message says what to change."""

from __future__ import annotations


class TrainingError(Exception):
    """Base class: a problem the user can fix (bad config, bad data, failed export)."""


class ConfigError(TrainingError):
    """A hyper-parameter, config file or flag is invalid."""


class DataError(TrainingError):
    """A dataset path, file or column is missing or unusable."""


class ExportError(TrainingError):
    """The ONNX export failed its checks; nothing was written."""
