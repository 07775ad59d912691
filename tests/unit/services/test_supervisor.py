"""The pure side of ``axon serve``: backoff, restart-or-give-up, shutdown order, the
process-tree walk and the stack plan. Time is a number passed in; nothing sleeps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from services import processes
from services.processes import descendants, orphans
from services.serve import (
    ChildSpec,
    ServeError,
    auth_headers,
    gateway_url,
    gateway_workers_of,
    grpc_port_of,
    plan,
    redact_password,
    replica_counts,
)
from services.supervisor import (
    GiveUp,
    Restart,
    RestartBook,
    RestartPolicy,
    Stage,
    describe_exit,
    shutdown_stages,
)

# --------------------------------------------------------------------------- backoff


def test_backoff_doubles_from_half_a_second_to_ten() -> None:
    policy = RestartPolicy()
    assert [policy.delay(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 10, 10, 10]


def test_backoff_never_overflows_on_long_streaks() -> None:
    assert RestartPolicy().delay(10_000) == 10.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"first_delay_s": -1.0},
        {"first_delay_s": 5.0, "max_delay_s": 1.0},
        {"factor": 0.5},
        {"give_up_after": -1},
        {"give_up_before_ready": -1},
    ],
)
def test_policy_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RestartPolicy(**kwargs)  # type: ignore[arg-type]


def test_delay_counts_crashes_from_one() -> None:
    with pytest.raises(ValueError):
        RestartPolicy().delay(0)


# --------------------------------------------------------------------------- restarts


def test_crash_schedules_a_restart_that_becomes_due() -> None:
    book = RestartBook(RestartPolicy())
    book.started("classifier", now=100.0)
    decision = book.exited("classifier", now=105.0)
    assert decision == Restart("classifier", attempt=1, delay_s=0.5, at=105.5, crashes=1)
    assert book.waiting() == ["classifier"]
    assert book.due(105.4) == []
    assert book.due(105.5) == ["classifier"]
    book.started("classifier", now=105.6)
    assert book.due(200.0) == [] and book.waiting() == []


def test_crashes_in_a_row_back_off_and_a_stable_run_resets() -> None:
    book = RestartBook(RestartPolicy(stable_after_s=30.0))
    now = 0.0
    delays = []
    for _ in range(4):
        book.started("redis", now)
        book.ready("redis")
        now += 1.0  # a short run
        decision = book.exited("redis", now)
        assert isinstance(decision, Restart)
        delays.append(decision.delay_s)
        now = decision.at
    assert delays == [0.5, 1.0, 2.0, 4.0]
    book.started("redis", now)
    now += 30.0  # stayed up long enough
    decision = book.exited("redis", now)
    assert isinstance(decision, Restart)
    assert (decision.delay_s, decision.crashes, decision.attempt) == (0.5, 1, 5)


def test_gives_up_after_so_many_crashes_in_a_row() -> None:
    book = RestartBook(RestartPolicy(give_up_after=3))
    now = 0.0
    for _ in range(2):
        book.started("gateway", now)
        decision = book.exited("gateway", now + 0.1)
        assert isinstance(decision, Restart)
        now = decision.at
    book.started("gateway", now)
    assert book.exited("gateway", now + 0.1) == GiveUp("gateway", crashes=3)
    assert book.waiting() == [] and book.due(1e9) == []


def test_zero_means_never_give_up() -> None:
    book = RestartBook(RestartPolicy(give_up_after=0, give_up_before_ready=0))
    now = 0.0
    for _ in range(100):
        book.started("x", now)
        decision = book.exited("x", now)
        assert isinstance(decision, Restart)
        now = decision.at
    assert decision.delay_s == 10.0


def test_a_child_never_ready_is_given_up_on_sooner() -> None:
    book = RestartBook(RestartPolicy(give_up_after=8, give_up_before_ready=3))
    book.started("gateway", 0.0)
    assert isinstance(book.exited("gateway", 0.1), Restart)
    book.started("gateway", 1.0)
    assert isinstance(book.exited("gateway", 1.1), Restart)
    book.started("gateway", 2.0)
    assert book.exited("gateway", 2.1) == GiveUp("gateway", crashes=3)


def test_once_ready_only_the_general_limit_applies() -> None:
    book = RestartBook(RestartPolicy(give_up_after=5, give_up_before_ready=2))
    now = 0.0
    for crash in range(1, 5):
        book.started("svc", now)
        book.ready("svc")
        decision = book.exited("svc", now + 1.0)
        assert isinstance(decision, Restart), crash
        now = decision.at
    book.started("svc", now)
    assert book.exited("svc", now + 1.0) == GiveUp("svc", crashes=5)


@pytest.mark.parametrize(
    ("after", "before_ready", "crashes", "ever_ready", "expected"),
    [
        (8, 3, 2, False, False),
        (8, 3, 3, False, True),
        (8, 3, 3, True, False),
        (8, 3, 8, True, True),
        (0, 3, 3, False, True),
        (0, 3, 50, True, False),
        (8, 0, 7, False, False),
        (0, 0, 10_000, False, False),
    ],
)
def test_gives_up(
    after: int, before_ready: int, crashes: int, ever_ready: bool, expected: bool
) -> None:
    policy = RestartPolicy(give_up_after=after, give_up_before_ready=before_ready)
    assert policy.gives_up(crashes, ever_ready=ever_ready) is expected


def test_children_are_independent_and_due_earliest_first() -> None:
    book = RestartBook(RestartPolicy())
    for name in ("a", "b"):
        book.started(name, 0.0)
    book.exited("a", 0.0)  # crash 1 → 0.5 s
    book.started("a", 0.5)
    book.exited("a", 1.0)  # crash 2 of a → 1 s, due at 2.0
    book.exited("b", 1.2)  # crash 1 of b → due at 1.7
    assert book.due(1.9) == ["b"]
    assert book.due(2.0) == ["b", "a"]


def test_uptime_and_unknown_names() -> None:
    book = RestartBook(RestartPolicy())
    book.started("a", 10.0)
    assert book.uptime("a", 12.5) == 2.5
    book.exited("a", 13.0)
    assert book.uptime("a", 14.0) == 0.0
    with pytest.raises(KeyError):
        book.exited("never-started", 1.0)


# --------------------------------------------------------------------------- shutdown


def test_shutdown_gateway_then_services_then_redis() -> None:
    children = [
        ("redis", "redis"),
        ("classifier-1", "service"),
        ("classifier-2", "service"),
        ("forecaster", "service"),
        ("gateway", "gateway"),
    ]
    grace = {"gateway": 15.0, "service": 30.0, "redis": 5.0}
    assert shutdown_stages(children, grace) == [  # type: ignore[arg-type]
        Stage("gateway", ("gateway",), 15.0),
        Stage("service", ("classifier-1", "classifier-2", "forecaster"), 30.0),
        Stage("redis", ("redis",), 5.0),
    ]


def test_shutdown_leaves_out_kinds_not_present() -> None:
    stages = shutdown_stages([("gateway", "gateway")], {"gateway": 1.0})
    assert stages == [Stage("gateway", ("gateway",), 1.0)]


@pytest.mark.parametrize(
    ("code", "text"),
    [(0, "exit code 0"), (3, "exit code 3"), (-9, "signal SIGKILL"), (-15, "signal SIGTERM")],
)
def test_describe_exit(code: int, text: str) -> None:
    assert describe_exit(code) == text


# --------------------------------------------------------------------------- process tree


def test_descendants_walks_the_tree_parents_first() -> None:
    parents = {10: 1, 11: 10, 12: 11, 13: 10, 20: 1, 21: 20}
    assert descendants(parents, 10) == [11, 13, 12]
    assert descendants(parents, 21) == []


def test_orphans_are_unknown_children_with_their_subtrees() -> None:
    me = os.getpid()
    parents = {100: me, 101: me, 102: 101, 103: 102, 200: 1, 300: me}
    assert orphans(known={100}, parents=parents) == [101, 102, 103, 300]
    assert orphans(known={100, 101, 300}, parents=parents) == []


# --------------------------------------------------------------------------- plan


MODELS = {"classifier": "digits-cnn", "generator": "digits-gan"}


def test_replicas_by_model_or_family() -> None:
    assert replica_counts({}, MODELS) == {"classifier": 1, "generator": 1}
    assert replica_counts({"digits-cnn": 3}, MODELS) == {"classifier": 3, "generator": 1}
    assert replica_counts({"generator": 2}, MODELS) == {"classifier": 1, "generator": 2}
    with pytest.raises(ServeError, match="sunspots-lstm is not served"):
        replica_counts({"sunspots-lstm": 2}, MODELS)
    with pytest.raises(ServeError, match="at least 1"):
        replica_counts({"digits-cnn": 0}, MODELS)


def _plan(env: dict[str, str], replicas: dict[str, int]) -> list[ChildSpec]:
    ports = iter(range(5000, 5100))
    return plan(
        host="0.0.0.0",
        port=8000,
        models_dir=Path("/models"),
        env=env,
        models=MODELS,
        replicas=replicas,
        redis_url="redis://127.0.0.1:6390/0",
        redis_port=6390,
        redis_dir=Path("/tmp/r"),
        redis_binary="/usr/bin/redis-server",
        instance_prefix="host-1",
        ports=lambda: next(ports),
    )


def test_plan_starts_redis_then_services_then_gateway() -> None:
    specs = _plan({}, {"digits-cnn": 2})
    assert [(s.name, s.kind) for s in specs] == [
        ("redis", "redis"),
        ("classifier-1", "service"),
        ("classifier-2", "service"),
        ("generator", "service"),
        ("gateway", "gateway"),
    ]
    redis, first, second, generator, gateway = specs
    assert redis.redis_port == 6390 and "--port" in redis.argv and "6390" in redis.argv
    assert redis.argv[5:9] == ("--save", "", "--appendonly", "no")
    assert first.ready_url == "http://127.0.0.1:5000/readyz"
    assert second.ready_url == "http://127.0.0.1:5001/readyz"
    assert first.env["AXON_CLASSIFIER_INSTANCE"] == "host-1-classifier-1"
    assert second.env["AXON_CLASSIFIER_INSTANCE"] == "host-1-classifier-2"
    assert generator.env["AXON_GENERATOR_INSTANCE"] == "host-1-generator"
    assert first.env["AXON_REDIS_URL"] == "redis://127.0.0.1:6390/0"
    assert gateway.ready_url == "http://127.0.0.1:8000/healthz/ready"
    assert gateway.ready_headers == {}
    assert gateway.argv[-6:] == ("--host", "0.0.0.0", "--port", "8000", "--grpc-port", "0")


def test_the_gateway_gets_its_grpc_port_and_the_banner_names_it() -> None:
    ports = iter(range(5000, 5100))
    gateway = plan(
        host="0.0.0.0", port=8000, models_dir=Path("/models"), env={}, models=MODELS,
        replicas={}, redis_url="redis://127.0.0.1:6390/0", instance_prefix="h",
        grpc_port=8001, ports=lambda: next(ports),
    )[-1]  # fmt: skip
    assert gateway.argv[-2:] == ("--grpc-port", "8001")
    assert gateway.banner == "http://127.0.0.1:8000, gRPC 127.0.0.1:8001"


def test_gateway_workers_share_the_port_and_are_not_probed_for_liveness() -> None:
    ports = iter(range(5000, 5100))
    specs = plan(
        host="0.0.0.0", port=8000, models_dir=Path("/models"), env={}, models=MODELS,
        replicas={}, redis_url="redis://127.0.0.1:6390/0", instance_prefix="h",
        grpc_port=8001, ports=lambda: next(ports), gateway_workers=3,
    )  # fmt: skip
    gateways = [s for s in specs if s.kind == "gateway"]
    assert [g.name for g in gateways] == ["gateway", "gateway-2", "gateway-3"]
    for gateway in gateways:
        assert gateway.argv[-3:] == ("--grpc-port", "8001", "--reuse-port")
        assert gateway.live_url == ""  # a probe of the shared port may reach another one
        assert gateway.ready_url == "http://127.0.0.1:8000/healthz/ready"
    assert gateways[1].banner.endswith("(process 2 of 3)")
    single = _plan({}, {})[-1]
    assert "--reuse-port" not in single.argv and single.live_url.endswith("/healthz/live")


def test_gateway_workers_option_then_environment_then_1() -> None:
    assert gateway_workers_of(None, {}) == 1
    assert gateway_workers_of(None, {"AXON_GATEWAY_WORKERS": "4"}) == 4
    assert gateway_workers_of(2, {"AXON_GATEWAY_WORKERS": "4"}) == 2
    for bad in (0, 65):
        with pytest.raises(ServeError, match="from 1 to 64"):
            gateway_workers_of(bad, {})
    with pytest.raises(ServeError, match="'two'"):
        gateway_workers_of(None, {"AXON_GATEWAY_WORKERS": "two"})


def test_grpc_port_option_then_environment_then_8001() -> None:
    assert grpc_port_of(None, {}) == 8001
    assert grpc_port_of(None, {"AXON_GRPC_PORT": "9001"}) == 9001
    assert grpc_port_of(0, {"AXON_GRPC_PORT": "9001"}) == 0
    with pytest.raises(ServeError, match="AXON_GRPC_PORT='x'"):
        grpc_port_of(None, {"AXON_GRPC_PORT": "x"})
    with pytest.raises(ServeError, match="--grpc-port 70000"):
        grpc_port_of(70000, {})


def test_plan_honours_fixed_ports_and_instance_names() -> None:
    env = {"AXON_CLASSIFIER_PORT": "3001", "AXON_INSTANCE": "box"}
    env["AXON_API_KEYS"] = "gateway-key-1"
    specs = {s.name: s for s in _plan(env, {"classifier": 2})}
    assert specs["gateway"].ready_headers == {"Authorization": "Bearer gateway-key-1"}
    assert specs["classifier-1"].ready_url == "http://127.0.0.1:3001/readyz"
    assert specs["classifier-2"].ready_url == "http://127.0.0.1:3002/readyz"
    assert specs["classifier-2"].env["AXON_CLASSIFIER_INSTANCE"] == "box-2"
    assert specs["generator"].env["AXON_GENERATOR_INSTANCE"] == "box"


def test_auth_header_sends_the_first_key() -> None:
    assert auth_headers({}) == {}
    assert auth_headers({"AXON_API_KEYS": " "}) == {}
    assert auth_headers({"AXON_API_KEYS": " first-key-1 , second-key"}) == {
        "Authorization": "Bearer first-key-1"
    }


def test_gateway_url_for_wildcard_hosts() -> None:
    assert gateway_url("0.0.0.0", 8000) == "http://127.0.0.1:8000"
    assert gateway_url("10.0.0.5", 81) == "http://10.0.0.5:81"


def test_a_printed_redis_url_hides_its_password() -> None:
    assert redact_password("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert redact_password("rediss://u:pw@h:1/0") == "rediss://u:***@h:1/0"
    assert redact_password("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_terminate_kills_a_child_that_ignores_sigterm() -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print(1, flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline()  # its handler is set
    processes.terminate(child, timeout_s=0.2)
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    processes.terminate(polite, timeout_s=10)
    assert polite.returncode == -signal.SIGTERM
