"""Scale from zero at the gateway (``AXON_HOLD_WITHOUT_WORKERS``, ``hold.HoldPolicy``):
which versions a request waits for while no worker serves them, which version an
unversioned request goes to then, and what the index says. The registry runs on the
in-process queue with an injected clock: no Redis, no sleeps (the e2e test
tests/e2e/test_scale_from_zero.py runs the same against real processes)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from services.contract.errors import SettingsError
from services.contract.protocol import WorkerInfo
from services.gateway.errors import NotFoundError, UnavailableError
from services.gateway.hold import NO_HOLD, HoldPolicy
from services.gateway.registry import Registry
from services.gateway.routing_rules import REASON_NONE_READY, REASON_WEIGHTS, RoutingRule
from services.gateway.settings import GatewaySettings
from services.gateway.transport_memory import MemoryTransport

BASE_ENV = {"AXON_REDIS_URL": "redis://127.0.0.1:6379/0"}


@pytest.fixture
def repo(model_repo: Path, tmp_path: Path) -> Path:
    """digits-cnn versions 1 and 2 and sunspots-lstm 1 (metadata only: the registry
    reads no ONNX file)."""
    for model, version in (("digits-cnn", 1), ("digits-cnn", 2), ("sunspots-lstm", 1)):
        meta = json.loads((model_repo / model / "1" / "metadata.json").read_text())
        meta["version"] = version
        folder = tmp_path / model / str(version)
        folder.mkdir(parents=True)
        (folder / "metadata.json").write_text(json.dumps(meta))
    return tmp_path


def registry_for(
    repo: Path, hold: HoldPolicy, now: list[float] | None = None
) -> tuple[Registry, MemoryTransport]:
    queue = MemoryTransport()
    clock = (lambda: now[0]) if now is not None else (lambda: 0.0)
    registry = Registry(queue, refresh_ms=100, no_worker_wait_ms=1_000, hold=hold, clock=clock)
    registry.add_repository(repo)
    asyncio.run(registry.refresh())
    return registry, queue


def worker(repo: Path, model: str, version: int, instance: str = "w1") -> WorkerInfo:
    meta = json.loads((repo / model / str(version) / "metadata.json").read_text())
    return WorkerInfo(instance, model, version, "CPUExecutionProvider", 8, meta, {}, 0, 0)


# --- the setting ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", NO_HOLD),
        ("false", NO_HOLD),
        ("FALSE", NO_HOLD),
        ("true", HoldPolicy(every=True)),
        (" True ", HoldPolicy(every=True)),
        ("digits-cnn", HoldPolicy(models=frozenset({"digits-cnn"}))),
        (
            "digits-cnn:1, sunspots-lstm ,digits-gan:12,",
            HoldPolicy(
                models=frozenset({"sunspots-lstm"}),
                versions=frozenset({("digits-cnn", 1), ("digits-gan", 12)}),
            ),
        ),
    ],
)
def test_the_setting_parses(raw: str, expected: HoldPolicy) -> None:
    assert HoldPolicy.parse(raw) == expected
    assert bool(expected) == (raw.strip().lower() not in ("", "false"))


@pytest.mark.parametrize(
    "raw", ["digits-cnn:0", "digits-cnn:latest", "Digits", "a:1:2", "digits_cnn", "yes", "1", "off"]
)
def test_a_bad_setting_names_the_variable_and_the_item(raw: str) -> None:
    with pytest.raises(SettingsError, match="AXON_HOLD_WITHOUT_WORKERS=.*model:version") as caught:
        GatewaySettings.from_env({**BASE_ENV, "AXON_HOLD_WITHOUT_WORKERS": raw})
    assert repr(raw) in str(caught.value)


def test_the_default_holds_nothing() -> None:
    settings = GatewaySettings.from_env(BASE_ENV)
    assert settings.hold_without_workers == NO_HOLD
    assert not settings.hold_without_workers.holds("digits-cnn", 1)


def test_holds_covers_every_version_a_model_item_and_one_version_only() -> None:
    policy = HoldPolicy.parse("digits-cnn,digits-gan:1")
    assert policy.holds("digits-cnn", 1) and policy.holds("digits-cnn", 7)
    assert policy.holds("digits-gan", 1) and not policy.holds("digits-gan", 2)
    assert not policy.holds("sunspots-lstm", 1)
    assert HoldPolicy(every=True).holds("anything", 3)


# --- the registry ---------------------------------------------------------------------


def test_without_the_hold_a_version_no_worker_ever_served_is_503(repo: Path) -> None:
    registry, _ = registry_for(repo, NO_HOLD)
    with pytest.raises(UnavailableError, match="no live worker"):
        registry.ready("digits-cnn", 1)


def test_a_held_version_with_no_worker_takes_requests_and_is_not_ready(repo: Path) -> None:
    registry, _ = registry_for(repo, HoldPolicy.parse("digits-cnn:1"))
    mv = registry.ready("digits-cnn", 1)
    assert (mv.name, mv.version, mv.ready, mv.partitions) == ("digits-cnn", 1, False, 1)
    with pytest.raises(UnavailableError, match="no live worker"):
        registry.ready("digits-cnn", 2)  # known, not held
    with pytest.raises(UnavailableError, match="no live worker"):
        registry.ready("sunspots-lstm")


def test_an_unknown_model_or_version_is_404_even_when_everything_is_held(repo: Path) -> None:
    registry, _ = registry_for(repo, HoldPolicy(every=True))
    with pytest.raises(NotFoundError, match="not served here"):
        registry.ready("digits-gan")  # not in this repository, never seen
    with pytest.raises(NotFoundError, match="has no version 3"):
        registry.ready("digits-cnn", 3)


def test_an_unversioned_request_holds_for_the_highest_held_version(repo: Path) -> None:
    # Only v1 is held (the version a Deployment serves): v2, in the repository but
    # deployed nowhere, would wait for a worker that never comes.
    registry, _ = registry_for(repo, HoldPolicy.parse("digits-cnn:1"))
    assert registry.ready("digits-cnn").version == 1
    # Every version held: the highest known one.
    registry, _ = registry_for(repo, HoldPolicy(every=True))
    assert registry.ready("digits-cnn").version == 2
    # Not held at all: the highest known, which is 503 as before.
    registry, _ = registry_for(repo, NO_HOLD)
    assert registry.lookup("digits-cnn").version == 2


def test_a_ready_version_wins_over_a_held_one(repo: Path) -> None:
    registry, queue = registry_for(repo, HoldPolicy(every=True))
    queue.register(worker(repo, "digits-cnn", 1))
    asyncio.run(registry.refresh())
    mv = registry.ready("digits-cnn")
    assert (mv.version, mv.ready) == (1, True)


def test_a_held_version_keeps_taking_requests_after_the_no_worker_wait(repo: Path) -> None:
    now = [100.0]
    registry, queue = registry_for(repo, HoldPolicy.parse("digits-cnn:1"), now)
    for version in (1, 2):
        queue.register(worker(repo, "digits-cnn", version, f"w{version}"))
    asyncio.run(registry.refresh())
    for version in (1, 2):
        queue.deregister(f"w{version}")  # scaled to zero
    asyncio.run(registry.refresh())
    now[0] += 0.9  # within AXON_NO_WORKER_WAIT_MS: both still take requests
    assert not registry.ready("digits-cnn", 2).ready
    now[0] += 0.2  # past it: the unheld version is 503, the held one waits
    with pytest.raises(UnavailableError, match="no live worker"):
        registry.ready("digits-cnn", 2)
    assert not registry.ready("digits-cnn", 1).ready
    assert registry.ready("digits-cnn").version == 1


def test_the_queue_down_is_503_even_for_a_held_version(repo: Path) -> None:
    registry, _ = registry_for(repo, HoldPolicy(every=True))
    registry.mark_down()
    with pytest.raises(UnavailableError, match="unreachable"):
        registry.ready("digits-cnn", 1)


def test_the_index_says_not_ready_and_held(repo: Path) -> None:
    registry, queue = registry_for(repo, HoldPolicy.parse("digits-cnn:1"))
    queue.register(worker(repo, "sunspots-lstm", 1))
    asyncio.run(registry.refresh())
    entries = {(e.name, e.version): e for e in registry.index()}
    held = entries[("digits-cnn", "1")]
    assert held.state == "UNAVAILABLE"
    assert "held until a worker starts" in held.reason
    assert "AXON_HOLD_WITHOUT_WORKERS" in held.reason
    assert entries[("digits-cnn", "2")].reason == "no live worker serves it"
    assert entries[("sunspots-lstm", "1")].state == "READY"
    assert {(e.name, e.version) for e in registry.index(ready_only=True)} == {
        ("sunspots-lstm", "1")
    }


def test_a_held_version_missing_from_the_repository_is_logged(
    repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="services.gateway.registry"):
        registry, _ = registry_for(repo, HoldPolicy.parse("digits-cnn:1,digits-cnn:5"))
    warned = [r.getMessage() for r in caplog.records if "AXON_HOLD" in r.getMessage()]
    assert len(warned) == 1 and "names digits-cnn:5, which" in warned[0], warned
    with pytest.raises(NotFoundError):
        registry.ready("digits-cnn", 5)


def test_at_zero_a_routing_rule_weighs_the_held_versions(repo: Path) -> None:
    # The rollout's first step pins version 1 (docs/rollouts.md); v2 is already in the
    # model volume. At zero, unversioned requests keep going to v1, not to the highest.
    registry, _ = registry_for(repo, HoldPolicy.parse("digits-cnn"))
    registry.set_rule("digits-cnn", RoutingRule(((1, 100), (2, 0))))
    mv, reason = registry.route("digits-cnn", lambda _: None)
    assert (mv.version, reason) == (1, REASON_WEIGHTS)
    assert registry.ready("digits-cnn", mv.version) is mv


def test_a_rule_whose_versions_are_not_held_falls_back_to_the_default(repo: Path) -> None:
    registry, _ = registry_for(repo, HoldPolicy.parse("digits-cnn:2"))
    registry.set_rule("digits-cnn", RoutingRule(((1, 100),)))
    mv, reason = registry.route("digits-cnn", lambda _: None)
    assert (mv.version, reason) == (2, REASON_NONE_READY)  # the highest held


def test_a_rule_with_a_ready_version_ignores_the_held_ones(repo: Path) -> None:
    registry, queue = registry_for(repo, HoldPolicy(every=True))
    queue.register(worker(repo, "digits-cnn", 2))
    asyncio.run(registry.refresh())
    registry.set_rule("digits-cnn", RoutingRule(((1, 50), (2, 50))))
    for _ in range(20):  # v1 has no worker: every draw lands on v2
        mv, reason = registry.route("digits-cnn", lambda _: None)
        assert (mv.version, reason) == (2, REASON_WEIGHTS)
