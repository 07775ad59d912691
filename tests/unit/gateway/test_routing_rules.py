"""The routing rule (``routing_rules``): validation naming the field, the pure picker at
its exact boundaries, skipping versions without a live worker, the stable sticky hash,
and the weighted draw over 2,000 seeded picks."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from services.gateway.errors import BadRequestError
from services.gateway.registry import Registry
from services.gateway.routing_rules import (
    REASON_NONE_READY,
    REASON_STICKY,
    REASON_WEIGHTS,
    RoutingRule,
    ShadowRule,
    choose,
    decode_rule,
    effective_weights,
    parse_rule,
    pick,
    sticky_point,
)
from services.gateway.transport_memory import MemoryTransport

RULE = RoutingRule(((1, 90), (2, 10)))


def test_a_valid_rule_parses_sorted_and_round_trips_through_json() -> None:
    rule = parse_rule({"weights": {"2": 10, "1": 90}, "sticky_header": "X-User-Id"}, {1, 2})
    assert rule == RoutingRule(((1, 90), (2, 10)), "X-User-Id")
    assert decode_rule(rule.to_json()) == rule
    assert rule.as_dict() == {"weights": {"1": 90, "2": 10}, "sticky_header": "X-User-Id"}
    assert parse_rule({"weights": {"1": 0, "2": 5}, "sticky_header": None}).sticky_header is None


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([1, 2], "body: expected a JSON object"),
        ({}, "weights: required"),
        ({"weights": {}}, "weights: required"),
        ({"weights": [90, 10]}, "weights: required"),
        ({"weights": {"3": 10}}, "weights.3: no such version (versions: [1, 2])"),
        ({"weights": {"v1": 10}}, "weights.v1: a version must be a positive integer"),
        ({"weights": {"0": 10}}, "weights.0: a version must be a positive integer"),
        ({"weights": {"1": -1}}, "weights.1: must be an integer >= 0, got -1"),
        ({"weights": {"1": 1.5}}, "weights.1: must be an integer >= 0, got 1.5"),
        ({"weights": {"1": True}}, "weights.1: must be an integer >= 0, got True"),
        ({"weights": {"1": "90"}}, "weights.1: must be an integer >= 0, got '90'"),
        ({"weights": {"1": 0, "2": 0}}, "weights: must sum to more than 0"),
        ({"weights": {"1": 10**7}}, "weights.1: at most 1000000"),
        ({"weights": {"1": 1, "01": 1}}, "weights.01: a version must be a positive integer"),
        ({"weights": {"1": 1}, "sticky_header": 7}, "sticky_header: must be null or an HTTP"),
        ({"weights": {"1": 1}, "sticky_header": "X User"}, "sticky_header: must be null"),
        ({"weights": {"1": 1}, "shadow": {"2": 5}}, "shadow.2: unknown field"),
        ({"weights": {"1": 1}, "shadow": 2}, "shadow: must be null or an object"),
        ({"weights": {"1": 1}, "shadow": {"fraction": 0.5}}, "shadow.version: required"),
        ({"weights": {"1": 1}, "shadow": {"version": 3}}, "shadow.version: no such version 3"),
        ({"weights": {"1": 1}, "shadow": {"version": True}}, "shadow.version: required"),
        ({"weights": {"1": 1}, "shadow": {"version": 2, "fraction": 0}}, "shadow.fraction: must"),
        ({"weights": {"1": 1}, "shadow": {"version": 2, "fraction": 1.5}}, "shadow.fraction"),
        ({"weights": {"1": 1}, "shadow": {"version": 2, "fraction": "1"}}, "shadow.fraction"),
        (
            {"weights": {"1": 1}, "shadow": {"version": 2, "fraction": float("nan")}},
            "shadow.fraction: must be a number in (0, 1], got nan",
        ),
        ({"weights": {"1": 1}, "weigths": 1}, "weigths: unknown field"),
    ],
)
def test_invalid_rules_are_refused_naming_the_field(doc: Any, message: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        parse_rule(doc, {1, 2})
    assert str(caught.value).startswith(message)


def test_a_shadow_is_parsed_kept_in_the_json_and_absent_when_unset() -> None:
    rule = parse_rule({"weights": {"1": 100}, "shadow": {"version": 2, "fraction": 0.25}}, {1, 2})
    assert rule.shadow == ShadowRule(2, 0.25)
    assert decode_rule(rule.to_json()) == rule
    assert rule.as_dict()["shadow"] == {"version": 2, "fraction": 0.25}
    whole = parse_rule({"weights": {"1": 1}, "shadow": {"version": "2"}}, {1, 2})
    assert whole.shadow == ShadowRule(2, 1.0)  # fraction defaults to every request
    plain = parse_rule({"weights": {"1": 1}, "shadow": None}, {1, 2})
    assert plain.shadow is None and "shadow" not in plain.as_dict()


def test_a_stored_rule_that_does_not_parse_is_a_value_error() -> None:
    for raw in ("not json", "[]", '{"weights": {"1": -1}}', "[" * 100_000):
        with pytest.raises(ValueError):
            decode_rule(raw)
    # Read back, a rule may name a version this gateway does not know yet.
    assert decode_rule('{"weights": {"9": 1}}') == RoutingRule(((9, 1),))


def test_pick_is_exact_at_the_cumulative_boundaries() -> None:
    weights = ((1, 90), (2, 10))
    assert pick(weights, 0.0) == 1
    assert pick(weights, 0.8999) == 1
    assert pick(weights, 0.9) == 2
    assert pick(weights, 0.99999) == 2
    three = ((1, 1), (2, 2), (3, 1))  # [0, .25) → 1, [.25, .75) → 2, [.75, 1) → 3
    assert [pick(three, p) for p in (0.0, 0.24, 0.25, 0.74, 0.75, 0.999)] == [1, 1, 2, 2, 3, 3]
    assert pick(((4, 5),), 0.5) == 4


def test_versions_without_a_live_worker_are_skipped_and_the_rest_renormalised() -> None:
    rule = RoutingRule(((1, 90), (2, 10), (3, 0)))
    assert effective_weights(rule, {1, 2, 3}) == ((1, 90), (2, 10))  # weight 0: never
    assert effective_weights(rule, {2}) == ((2, 10),)
    assert choose(rule, {2}, sticky_value=None, draw=0.0) == (2, REASON_WEIGHTS)
    assert choose(rule, {2}, sticky_value=None, draw=0.95) == (2, REASON_WEIGHTS)
    assert choose(rule, {3}, sticky_value=None, draw=0.5) == (None, REASON_NONE_READY)
    assert choose(rule, set(), sticky_value="u1", draw=0.5) == (None, REASON_NONE_READY)


def test_the_sticky_hash_is_stable_and_spreads_by_the_weights() -> None:
    # Fixed values: the hash is BLAKE2b, the same in every process and release.
    assert sticky_point("user-1") == pytest.approx(0.6041924073669338, abs=1e-15)
    assert 0.0 <= sticky_point("") < 1.0
    picked = {
        f"user-{i}": choose(RULE, {1, 2}, sticky_value=f"user-{i}", draw=0.0) for i in range(2000)
    }
    again = {
        f"user-{i}": choose(RULE, {1, 2}, sticky_value=f"user-{i}", draw=0.99) for i in range(2000)
    }
    assert picked == again  # the draw plays no part
    assert {reason for _, reason in picked.values()} == {REASON_STICKY}
    share = Counter(version for version, _ in picked.values())[2] / 2000
    assert abs(share - 0.10) <= 0.03


def test_2000_seeded_draws_follow_90_10_within_3_points() -> None:
    draws = random.Random(7)
    counts = Counter(
        choose(RULE, {1, 2}, sticky_value=None, draw=draws.random())[0] for _ in range(2000)
    )
    assert abs(counts[1] / 2000 - 0.90) <= 0.03
    assert abs(counts[2] / 2000 - 0.10) <= 0.03
    print(f"90/10 over 2000 seeded draws: {counts[1]} / {counts[2]}")


def test_a_refresh_that_read_before_this_gateways_write_does_not_undo_it() -> None:
    async def main() -> None:
        queue = MemoryTransport()
        registry = Registry(queue, refresh_ms=500)
        await queue.put_rule("m", '{"weights": {"1": 1}}')
        read = asyncio.Event()
        release = asyncio.Event()
        real = queue.get_rules

        async def slow(models: Sequence[str]) -> dict[str, str]:
            answer = await real(["m"])
            read.set()
            await release.wait()
            return answer

        queue.get_rules = slow  # type: ignore[method-assign]
        refreshing = asyncio.create_task(registry.refresh())
        await read.wait()  # the refresh holds the old rule
        mine = RoutingRule(((2, 1),))
        registry.set_rule("m", mine)
        release.set()
        await refreshing
        assert registry.rule("m") == mine
        await registry.refresh()  # the next refresh reads Redis again (the old rule here)
        assert registry.rule("m") == RoutingRule(((1, 1),))

    asyncio.run(main())
