"""GatewaySettings.from_env: defaults, parsing, loud failures naming the variable."""

from __future__ import annotations

import pytest

from services.contract.errors import SettingsError
from services.gateway.settings import GatewaySettings

BASE = {"AXON_REDIS_URL": "redis://127.0.0.1:1/0"}


def test_defaults() -> None:
    settings = GatewaySettings.from_env(BASE)
    assert settings.api_keys == ()
    assert settings.timeout_for("digits-cnn") == 30_000
    assert settings.backlog_limit_for("digits-cnn") == 1_000
    assert settings.instance.startswith("gw-")
    assert settings.models_dir is None
    assert settings.gc_threshold == 10_000
    assert GatewaySettings.from_env({**BASE, "AXON_GC_THRESHOLD": "0"}).gc_threshold == 0
    assert settings.redis_fast
    assert not GatewaySettings.from_env({**BASE, "AXON_REDIS_FAST": "off"}).redis_fast


def test_values_and_per_model_maps() -> None:
    settings = GatewaySettings.from_env(
        {
            **BASE,
            "AXON_API_KEYS": "key-aaaaaaaa, key-bbbbbbbb",
            "AXON_MODEL_TIMEOUTS_MS": "digits-gan=60000",
            "AXON_MODEL_BACKLOG_LIMITS": "digits-cnn=5,sunspots-lstm=7",
            "AXON_MAX_ROWS": "8",
            "AXON_MODELS_DIR": "models",
        }
    )
    assert settings.api_keys == ("key-aaaaaaaa", "key-bbbbbbbb")
    assert settings.timeout_for("digits-gan") == 60_000
    assert settings.timeout_for("digits-cnn") == 30_000
    assert settings.backlog_limit_for("sunspots-lstm") == 7
    assert settings.max_rows == 8
    assert str(settings.models_dir) == "models"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "AXON_REDIS_URL"),
        ({**BASE, "AXON_MAX_ROWS": "0"}, "AXON_MAX_ROWS"),
        ({**BASE, "AXON_MAX_BODY_BYTES": "lots"}, "AXON_MAX_BODY_BYTES"),
        ({**BASE, "AXON_API_KEYS": "short"}, "AXON_API_KEYS"),
        ({**BASE, "AXON_MODEL_TIMEOUTS_MS": "digits-gan"}, "AXON_MODEL_TIMEOUTS_MS"),
        ({**BASE, "AXON_MODEL_BACKLOG_LIMITS": "Bad_Name=3"}, "AXON_MODEL_BACKLOG_LIMITS"),
        ({**BASE, "AXON_TIMEOUT_MS": "9", "AXON_MAX_TIMEOUT_MS": "5"}, "AXON_TIMEOUT_MS"),
        ({**BASE, "AXON_REPLY_BLOCK_S": "inf"}, "AXON_REPLY_BLOCK_S"),
        ({**BASE, "AXON_MODEL_TIMEOUTS_MS": "digits-gan=400000"}, "digits-gan=400000"),
        ({**BASE, "AXON_GRPC_PORT": "70000"}, "AXON_GRPC_PORT"),
        ({**BASE, "AXON_GC_THRESHOLD": "-1"}, "AXON_GC_THRESHOLD"),
        ({**BASE, "AXON_REDIS_FAST": "fast"}, "AXON_REDIS_FAST"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        GatewaySettings.from_env(env)


def test_admin_keys_follow_the_api_key_rules_and_must_differ_from_them() -> None:
    assert GatewaySettings.from_env(BASE).admin_keys == ()
    settings = GatewaySettings.from_env(
        {**BASE, "AXON_API_KEYS": "key-aaaaaaaa", "AXON_ADMIN_KEYS": " adm-aaaaaaaa,adm-bbbbbbbb "}
    )
    assert settings.admin_keys == ("adm-aaaaaaaa", "adm-bbbbbbbb")
    with pytest.raises(SettingsError, match="AXON_ADMIN_KEYS.*at least 8 characters"):
        GatewaySettings.from_env({**BASE, "AXON_ADMIN_KEYS": "short"})
    with pytest.raises(SettingsError, match="AXON_ADMIN_KEYS: a key is also in AXON_API_KEYS"):
        GatewaySettings.from_env(
            {**BASE, "AXON_API_KEYS": "key-aaaaaaaa", "AXON_ADMIN_KEYS": "key-aaaaaaaa"}
        )
