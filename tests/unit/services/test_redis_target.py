"""``redis_client.parse_target``: which deployment a URL and ``AXON_REDIS_MODE`` name
(pure; no Redis)."""

from __future__ import annotations

import pytest

from services.contract.redis_client import RedisTarget, RedisTargetError, parse_mode, parse_target


def test_plain_urls_are_one_server() -> None:
    assert parse_target("redis://h:6379/0") == RedisTarget("standalone", "redis://h:6379/0")
    assert parse_target("rediss://:pw@h:6380/2").url == "rediss://:pw@h:6380/2"


def test_cluster_by_scheme_or_by_mode() -> None:
    assert parse_target("redis+cluster://h:7000") == RedisTarget("cluster", "redis://h:7000")
    assert parse_target("rediss+cluster://h:7000").url == "rediss://h:7000"
    assert parse_target("redis://h:7000", "cluster") == RedisTarget("cluster", "redis://h:7000")


def test_sentinel_urls_name_the_sentinels_the_service_and_the_db() -> None:
    target = parse_target("redis+sentinel://:secret@s1:26379,s2:26380/mymaster/3")
    assert target.mode == "sentinel"
    assert target.sentinels == (("s1", 26379), ("s2", 26380))
    assert target.service == "mymaster"
    assert target.url == "redis://:secret@localhost/3"  # the master's options, no host
    assert parse_target("redis://s1:26379/mymaster", "sentinel").url == "redis://localhost/0"


@pytest.mark.parametrize(
    ("url", "mode", "message"),
    [
        ("http://h:6379", "auto", "needs one of the schemes"),
        ("h:6379", "auto", "needs one of the schemes"),
        ("redis://h:6379", "galaxy", "AXON_REDIS_MODE: 'galaxy' is not one of"),
        ("redis+sentinel://s1/mymaster", "auto", "must be host:port"),
        ("redis+sentinel://s1:26379", "auto", "ends with /service"),
        ("redis+sentinel://s1:26379/m/x", "auto", "ends with /service"),
        ("redis+sentinel://s1:26379/m/0/1", "auto", "ends with /service"),
    ],
)
def test_bad_targets_say_what_to_change(url: str, mode: str, message: str) -> None:
    with pytest.raises(RedisTargetError, match=message):
        parse_target(url, mode)


def test_modes_are_read_case_insensitively() -> None:
    assert parse_mode(" Cluster ") == "cluster"
    with pytest.raises(ValueError, match="must be one of auto, standalone, cluster, sentinel"):
        parse_mode("shard")


def test_settings_refuse_a_bad_combination_at_start_up() -> None:
    from services.contract.errors import SettingsError
    from services.gateway.settings import GatewaySettings
    from services.runtime.settings import WorkerSettings

    env = {"AXON_REDIS_URL": "redis+sentinel://s1:26379", "AXON_MODEL": "m"}
    with pytest.raises(SettingsError, match="ends with /service"):
        GatewaySettings.from_env(env)
    with pytest.raises(SettingsError, match="ends with /service"):
        WorkerSettings.from_env(env)
    ok = GatewaySettings.from_env({"AXON_REDIS_URL": "redis://h:1", "AXON_REDIS_MODE": "CLUSTER"})
    assert ok.redis_mode == "cluster"
