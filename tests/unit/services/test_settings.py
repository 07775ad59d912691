"""Worker settings from a plain mapping: defaults, family overrides, loud failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.contract.errors import SettingsError
from services.runtime.settings import WorkerSettings

BASE = {"AXON_REDIS_URL": "redis://127.0.0.1:7000/0"}


def test_defaults_for_a_family() -> None:
    settings = WorkerSettings.from_env({**BASE, "AXON_INSTANCE": "w1"}, "forecaster")
    assert settings.model == "sunspots-lstm"
    assert settings.model_version is None
    assert settings.models_dir == Path("exported_models")
    assert (settings.max_batch_rows, settings.max_queue_delay_ms, settings.provider) == (
        64,
        0.0,
        "auto",
    )
    assert settings.instance == "w1"


def test_family_specific_value_overrides_the_generic_one() -> None:
    env = {
        **BASE,
        "AXON_MAX_BATCH_ROWS": "32",
        "AXON_FORECASTER_MAX_BATCH_ROWS": "128",
        "AXON_CLASSIFIER_MODEL_VERSION": "3",
    }
    assert WorkerSettings.from_env(env, "forecaster").max_batch_rows == 128
    classifier = WorkerSettings.from_env(env, "classifier")
    assert (classifier.max_batch_rows, classifier.model_version) == (32, 3)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("AXON_MAX_BATCH_ROWS", "0", "AXON_MAX_BATCH_ROWS='0': must be a positive integer"),
        ("AXON_MAX_BATCH_ROWS", "many", "AXON_MAX_BATCH_ROWS='many'"),
        ("AXON_MAX_QUEUE_DELAY_MS", "-1", "must be a finite number"),
        ("AXON_PROVIDER", "rocm", "must be one of auto, cpu, cuda, tensorrt"),
        ("AXON_MODEL_VERSION", "01", "without leading zeros"),
        ("AXON_WARMUP", "maybe", "true or false"),
        ("AXON_REDIS_FAST", "2", "AXON_REDIS_FAST=.2.: must be true or false"),
        ("AXON_HEARTBEAT_TTL_MS", "1000", "must be greater than AXON_HEARTBEAT_INTERVAL_MS"),
        ("AXON_JOB_BATCH_ROWS", "65", "must be at most AXON_MAX_BATCH_ROWS \\(64\\), got 65"),
        ("AXON_JOB_BATCH_ROWS", "0", "AXON_JOB_BATCH_ROWS='0': must be a positive integer"),
        ("AXON_WORKER_NICE", "20", "from 0 \\(normal\\) to 19"),
        ("AXON_WORKER_NICE", "-5", "AXON_WORKER_NICE='-5': must be a niceness"),
    ],
)
def test_bad_values_fail_loudly_naming_the_variable(key: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        WorkerSettings.from_env({**BASE, key: value}, "classifier")


def test_job_rows_default_to_a_quarter_of_the_batch_and_nice_to_zero() -> None:
    assert WorkerSettings.from_env(BASE, "classifier").job_batch_rows == 16
    small = WorkerSettings.from_env({**BASE, "AXON_MAX_BATCH_ROWS": "3"}, "classifier")
    assert (small.job_batch_rows, small.nice) == (1, 0)
    env = {**BASE, "AXON_JOB_BATCH_ROWS": "64", "AXON_CLASSIFIER_WORKER_NICE": "19"}
    chosen = WorkerSettings.from_env(env, "classifier")
    assert (chosen.job_batch_rows, chosen.nice) == (64, 19)


def test_redis_url_is_required() -> None:
    with pytest.raises(SettingsError, match="AXON_CLASSIFIER_REDIS_URL or AXON_REDIS_URL"):
        WorkerSettings.from_env({}, "classifier")


def test_model_is_required_without_a_family() -> None:
    with pytest.raises(SettingsError, match="AXON_MODEL: is required"):
        WorkerSettings.from_env(BASE)


def test_latest_version_keyword() -> None:
    assert (
        WorkerSettings.from_env({**BASE, "AXON_MODEL_VERSION": "latest"}, "generator").model_version
        is None
    )
