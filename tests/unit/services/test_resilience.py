"""The retry backoff and the failure-streak log every long-lived task uses."""

from __future__ import annotations

import logging

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.contract.resilience import Backoff, FailureLog, describe, is_redis_error, unreachable


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    backoff = Backoff(first_s=0.1, longest_s=0.5)
    assert [backoff.failure() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert backoff.failures == 5
    backoff.success()
    assert (backoff.failures, backoff.failure()) == (0, 0.1)


@pytest.mark.parametrize(
    ("exc", "is_unreachable"),
    [
        (RedisConnectionError("refused"), True),
        (RedisTimeoutError("timed out"), True),
        (ConnectionResetError(), True),
        (OutOfMemoryError("OOM command not allowed"), False),
        (ReadOnlyError("READONLY You can't write against a read only replica"), False),
        (ResponseError("NOPERM"), False),
    ],
)
def test_an_error_reply_is_not_an_unreachable_redis(exc: Exception, is_unreachable: bool) -> None:
    assert unreachable(exc) is is_unreachable
    assert is_redis_error(exc)
    assert not is_redis_error(KeyError("bug"))


def test_describe_names_the_class_and_the_first_line() -> None:
    assert describe(OutOfMemoryError("OOM here\nmore")) == "OutOfMemoryError: OOM here"
    assert describe(KeyError()) == "KeyError"


def test_a_failure_streak_logs_once_per_interval_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    failures = FailureLog(logging.getLogger("t"), "heartbeat", lambda: now[0], every_s=10.0)
    with caplog.at_level(logging.INFO, logger="t"):
        for second in range(25):
            now[0] = float(second)
            failures.failed(OutOfMemoryError("OOM"), retry_in_s=1.0)
        failures.recovered()
        failures.recovered()  # no streak: nothing more
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4, lines  # at 0 s, 10 s, 20 s, then the recovery
    assert lines[0].startswith("heartbeat: command failed (OutOfMemoryError: OOM)")
    assert "failure 21 in a row" in lines[2]
    assert lines[3] == "heartbeat: working again after 25 failures"
