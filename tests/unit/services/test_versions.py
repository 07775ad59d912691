"""Versions side by side: the policy (parsing, selection), the diff between what runs and
what is wanted, the repository scan of half-written versions, and ``plan`` with several
versions. Pure or on tmp_path files; nothing sleeps, nothing is started."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import pytest

from services.runtime.repository import RepositoryScan
from services.runtime.versions import (
    Changes,
    VersionPolicy,
    VersionPolicyError,
    diff,
    parse_policy,
    parse_policy_file,
    policy_for,
)
from services.serve import (
    Child,
    ChildSpec,
    Reconciler,
    ServeError,
    Supervisor,
    plan,
    poll_interval,
    service_specs,
    version_watch,
)
from services.supervisor import RestartBook

# --------------------------------------------------------------------------- policy


@pytest.mark.parametrize(
    ("raw", "policy"),
    [
        ("latest:1", VersionPolicy("latest", count=1)),
        ("latest", VersionPolicy("latest", count=1)),
        (" LATEST:3 ", VersionPolicy("latest", count=3)),
        ("all", VersionPolicy("all")),
        ("2", VersionPolicy("specific", versions=frozenset({2}))),
        ("1, 3", VersionPolicy("specific", versions=frozenset({1, 3}))),
    ],
)
def test_policies_parse(raw: str, policy: VersionPolicy) -> None:
    assert parse_policy(raw, "--versions") == policy


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("latest:0", "--versions 'latest:0': N must be a positive integer"),
        ("latest:", "N must be a positive integer"),
        ("latest:x", "N must be a positive integer"),
        ("", "--versions '': expected latest:N"),
        ("newest", "expected latest:N (N >= 1), all, or version numbers such as 1,3"),
        ("1,,3", "--versions '1,,3'"),
        ("0", "--versions '0'"),
        ("01", "--versions '01'"),
        ("-1", "--versions '-1'"),
    ],
)
def test_bad_policies_name_the_option(raw: str, message: str) -> None:
    with pytest.raises(VersionPolicyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_policy(raw, "--versions")


@pytest.mark.parametrize(
    ("raw", "present", "selected"),
    [
        ("latest:1", [1, 2, 3], [3]),
        ("latest:2", [3, 1, 2], [2, 3]),
        ("latest:5", [1, 2], [1, 2]),
        ("latest:2", [], []),
        ("all", [2, 1, 7], [1, 2, 7]),
        ("1,3", [1, 2, 3, 4], [1, 3]),
        ("1,3", [2, 3], [3]),
        ("5", [1, 2], []),
    ],
)
def test_selection(raw: str, present: list[int], selected: list[int]) -> None:
    assert parse_policy(raw, "x").select(present) == selected


def test_single_and_str() -> None:
    assert parse_policy("latest:1", "x").single and parse_policy("4", "x").single
    assert not parse_policy("latest:2", "x").single and not parse_policy("all", "x").single
    assert not parse_policy("1,2", "x").single
    assert [str(parse_policy(r, "x")) for r in ("latest", "all", "3,1")] == [
        "latest:1",
        "all",
        "1,3",
    ]


def test_policy_file_entry_then_option_then_environment_then_latest_1() -> None:
    per_model = parse_policy_file('{"digits-cnn": "latest:2"}', "v.json")
    env = {"AXON_VERSION_POLICY": "all"}
    assert str(policy_for("digits-cnn", per_model, "1", env)) == "latest:2"
    assert str(policy_for("digits-gan", per_model, "1", env)) == "1"
    assert str(policy_for("digits-gan", per_model, None, env)) == "all"
    assert str(policy_for("digits-gan", per_model, None, {})) == "latest:1"
    with pytest.raises(VersionPolicyError, match="AXON_VERSION_POLICY 'x'"):
        policy_for("digits-gan", {}, None, {"AXON_VERSION_POLICY": "x"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "v.json: not valid JSON"),
        ('["all"]', "v.json: expected a JSON object"),
        ('{"Bad_Name": "all"}', "v.json: 'Bad_Name' is not a model name"),
        ('{"digits-cnn": 2}', 'v.json: digits-cnn: expected a string such as "latest:2"'),
        ('{"digits-cnn": "latest:0"}', "v.json: digits-cnn: 'latest:0': N must be"),
    ],
)
def test_bad_policy_files(text: str, message: str) -> None:
    with pytest.raises(VersionPolicyError, match=message):
        parse_policy_file(text, "v.json")


def test_version_watch_refuses_a_file_naming_no_served_model(tmp_path: Path) -> None:
    path = tmp_path / "versions.json"
    path.write_text('{"resnet": "all"}')
    with pytest.raises(ServeError, match="resnet is not a model served here"):
        version_watch(tmp_path, {}, None, path)
    with pytest.raises(ServeError, match="--versions 'nope'"):
        version_watch(tmp_path, {}, "nope")
    with pytest.raises(ServeError, match="--versions-file .*missing.json"):
        version_watch(tmp_path, {}, None, tmp_path / "missing.json")


def test_poll_interval() -> None:
    assert poll_interval({}) == 2.0
    assert poll_interval({"AXON_REPOSITORY_POLL_S": "0.5"}) == 0.5
    assert poll_interval({"AXON_REPOSITORY_POLL_S": "0"}) == 0.0
    for bad in ("x", "-1", "inf", "nan"):
        with pytest.raises(ServeError, match="AXON_REPOSITORY_POLL_S"):
            poll_interval({"AXON_REPOSITORY_POLL_S": bad})


# --------------------------------------------------------------------------- diff


def test_diff_starts_new_and_stops_gone_versions() -> None:
    running = {("classifier", 1): True, ("classifier", 2): True, ("generator", 1): True}
    wanted = [("classifier", 2), ("generator", 1), ("forecaster", 1)]
    assert diff(running, wanted) == Changes(start=(("forecaster", 1),), stop=(("classifier", 1),))


def test_diff_nothing_to_do() -> None:
    assert diff({("c", 1): True}, [("c", 1)]) == Changes()
    assert diff({}, []) == Changes()


def test_a_roll_over_holds_the_old_version_until_the_new_one_is_ready() -> None:
    # latest:2 on v1, v2; v3 appears: start v3, keep v1 until v3 is ready.
    wanted = [("c", 2), ("c", 3)]
    assert diff({("c", 1): True, ("c", 2): True}, wanted) == Changes(
        start=(("c", 3),), hold=(("c", 1),)
    )
    assert diff({("c", 1): True, ("c", 2): True, ("c", 3): False}, wanted) == Changes(
        hold=(("c", 1),)
    )
    assert diff({("c", 1): True, ("c", 2): True, ("c", 3): True}, wanted) == Changes(
        stop=(("c", 1),)
    )


def test_a_hold_is_per_model() -> None:
    running = {("c", 1): True, ("g", 1): True}
    assert diff(running, [("c", 2)]) == Changes(
        start=(("c", 2),), stop=(("g", 1),), hold=(("c", 1),)
    )


def test_every_version_removed_stops_at_once() -> None:
    assert diff({("c", 1): True, ("c", 2): False}, []) == Changes(stop=(("c", 1), ("c", 2)))


def test_a_forgotten_child_is_never_due() -> None:
    book = RestartBook()
    book.started("classifier-v1", 0.0)
    book.exited("classifier-v1", 1.0)
    book.forget("classifier-v1")
    book.forget("never-started")
    assert book.due(1e9) == [] and book.waiting() == []


# --------------------------------------------------------------------------- scan


def _version(root: Path, model: str, version: int, *, onnx: bytes = b"onnx") -> Path:
    folder = root / model / str(version)
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(onnx)
    meta = {
        "schema_version": 1,
        "name": model,
        "version": version,
        "task": "forecast",
        "sha256": hashlib.sha256(onnx).hexdigest(),
        "inputs": [{"name": "history", "datatype": "FP32", "shape": [-1, -1]}],
        "outputs": [{"name": "forecast", "datatype": "FP32", "shape": [-1, 4]}],
        "window": 12,
        "horizon": 4,
    }
    (folder / "metadata.json").write_text(json.dumps(meta))
    return folder


def test_scan_tells_complete_from_half_written_versions(tmp_path: Path) -> None:
    _version(tmp_path, "m", 1)
    only_onnx = _version(tmp_path, "m", 2)
    (only_onnx / "metadata.json").unlink()
    bad_sha = _version(tmp_path, "m", 3)
    (bad_sha / "model.onnx").write_bytes(b"half")
    (tmp_path / "m" / "4").mkdir()
    scan = RepositoryScan(tmp_path)
    complete, incomplete = scan.versions("m")
    assert complete == [1]
    assert "metadata.json missing" in incomplete[2]
    assert "sha256 mismatch" in incomplete[3]
    assert "metadata.json and model.onnx missing" in incomplete[4]
    assert scan.versions("absent") == ([], {})


def test_scan_checks_a_version_again_only_when_its_files_change(tmp_path: Path) -> None:
    folder = _version(tmp_path, "m", 1)
    scan = RepositoryScan(tmp_path)
    assert scan.versions("m") == ([1], {})
    checked = dict(scan._checked)
    assert scan.versions("m") == ([1], {}) and scan._checked == checked
    (folder / "model.onnx").write_bytes(b"other bytes")  # size changes: checked again
    assert "sha256 mismatch" in scan.versions("m")[1][1]


# --------------------------------------------------------------------------- plan


def _plan(
    versions: dict[str, list[int]],
    versioned: set[str],
    env: dict[str, str] | None = None,
    nice: dict[str, int] | None = None,
) -> dict[str, ChildSpec]:
    ports = iter(range(5000, 5100))
    specs = plan(
        host="127.0.0.1", port=8000, models_dir=Path("/models"), env=env or {},
        models={"classifier": "digits-cnn", "generator": "digits-gan"},
        replicas={"digits-cnn": 2}, redis_url="redis://127.0.0.1:6390/0",
        instance_prefix="h", ports=lambda: next(ports), versions=versions,
        versioned=versioned, nice=nice,
    )  # fmt: skip
    return {s.name: s for s in specs}


def test_plan_runs_every_selected_version_with_its_replicas() -> None:
    specs = _plan({"classifier": [1, 2], "generator": [4]}, {"classifier"})
    assert list(specs) == [
        "classifier-v1-1",
        "classifier-v1-2",
        "classifier-v2-1",
        "classifier-v2-2",
        "generator",
        "gateway",
    ]
    v2 = specs["classifier-v2-2"]
    assert v2.env["AXON_CLASSIFIER_MODEL_VERSION"] == "2"
    assert v2.env["AXON_CLASSIFIER_INSTANCE"] == "h-classifier-v2-2"
    assert (v2.family, v2.model, v2.version) == ("classifier", "digits-cnn", 2)
    assert v2.banner.startswith("digits-cnn v2 → http://127.0.0.1:5003")
    generator = specs["generator"]
    assert generator.env["AXON_GENERATOR_MODEL_VERSION"] == "4"
    assert generator.env["AXON_GENERATOR_INSTANCE"] == "h-generator"


def test_nice_applies_to_one_version_or_to_every_version_of_a_model() -> None:
    specs = _plan({"classifier": [1, 2], "generator": [4]}, {"classifier"},
                  nice={"digits-cnn:2": 19, "digits-gan": 5})  # fmt: skip
    assert "AXON_CLASSIFIER_WORKER_NICE" not in specs["classifier-v1-1"].env
    assert specs["classifier-v2-1"].env["AXON_CLASSIFIER_WORKER_NICE"] == "19"
    assert specs["classifier-v2-2"].env["AXON_CLASSIFIER_WORKER_NICE"] == "19"
    assert specs["generator"].env["AXON_GENERATOR_WORKER_NICE"] == "5"
    assert "AXON_CLASSIFIER_WORKER_NICE" not in specs["gateway"].env


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("digits-cnn:2=19", ("digits-cnn:2", 19)), ("classifier=0", ("classifier", 0))],
)
def test_the_nice_option_parses_model_version_and_niceness(
    raw: str, expected: tuple[str, int]
) -> None:
    from services.cli import _parser

    options = _parser().parse_args(["serve", "--nice", raw])
    assert options.nice == [expected]


@pytest.mark.parametrize("raw", ["digits-cnn", "digits-cnn:02=3", "digits-cnn:2=20", "=3", "m=-1"])
def test_a_bad_nice_option_is_refused_with_the_expected_form(
    raw: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.cli import _parser

    with pytest.raises(SystemExit):
        _parser().parse_args(["serve", "--nice", raw])
    assert "argument --nice" in capsys.readouterr().err


def test_fixed_ports_go_on_across_versions_and_skip_taken_ones() -> None:
    specs = _plan({"classifier": [1, 2]}, {"classifier"}, {"AXON_CLASSIFIER_PORT": "3001"})
    ports = [specs[n].port for n in specs if n.startswith("classifier")]
    assert ports == [3001, 3002, 3003, 3004]
    taken = {3001, 3003}
    later = service_specs(
        family="classifier", model="digits-cnn", version=3, count=2,
        env={"AXON_CLASSIFIER_PORT": "3001"}, instance_prefix="h", versioned=True,
        ports=lambda: 0, taken=taken,
    )  # fmt: skip
    assert [s.port for s in later] == [3002, 3004]
    assert [s.name for s in later] == ["classifier-v3-1", "classifier-v3-2"]


# --------------------------------------------------------------------------- reconciler


class FakeSupervisor:
    """What ``Reconciler`` uses of ``Supervisor``: children, add, retire, readiness."""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self.abandoned: list[ChildSpec] = []
        self.retired: list[str] = []

    def add(self, spec: ChildSpec) -> None:
        self.children.append(Child(spec, Path("/dev/null"), io.BytesIO()))

    def retire(self, name: str, why: str) -> None:
        child = next(c for c in self.children if c.name == name)
        child.retiring_since = 0.0
        self.retired.append(f"{name}: {why}")

    def running_versions(self) -> dict[tuple[str, int], bool]:
        return Supervisor.running_versions(self)  # type: ignore[arg-type]

    def ready(self, name: str) -> None:
        next(c for c in self.children if c.name == name).ready = True


def _reconciler(tmp_path: Path, policy: str) -> tuple[Reconciler, FakeSupervisor]:
    watch = version_watch(tmp_path, {"AXON_CLASSIFIER_MODEL": "m"}, policy)
    supervisor = FakeSupervisor()

    def make(family: str, version: int, taken: set[int]) -> list[ChildSpec]:
        return service_specs(
            family=family, model=watch.models[family], version=version, count=1, env={},
            instance_prefix="h", versioned=True, ports=lambda: 4000 + version, taken=taken,
        )  # fmt: skip

    clock = iter(float(t) for t in range(1000))
    reconciler = Reconciler(supervisor, watch, make, 1.0, clock=lambda: next(clock))  # type: ignore[arg-type]
    return reconciler, supervisor


def test_reconciler_rolls_over_make_before_break(tmp_path: Path) -> None:
    _version(tmp_path, "m", 1)
    reconciler, supervisor = _reconciler(tmp_path, "latest:1")
    reconciler.tick()
    assert [c.name for c in supervisor.children] == ["classifier-v1"]
    supervisor.ready("classifier-v1")
    _version(tmp_path, "m", 2)
    reconciler.tick()
    assert [c.name for c in supervisor.children] == ["classifier-v1", "classifier-v2"]
    assert supervisor.retired == []  # v2 is not ready yet: v1 stays
    reconciler.tick()
    assert supervisor.retired == []
    supervisor.ready("classifier-v2")
    reconciler.tick()
    assert supervisor.retired == ["classifier-v1: m version 1 left the selection (latest:1)"]


def test_reconciler_stops_a_removed_version_and_skips_a_half_written_one(tmp_path: Path) -> None:
    for version in (1, 2):
        _version(tmp_path, "m", version)
    reconciler, supervisor = _reconciler(tmp_path, "all")
    reconciler.tick()
    for child in supervisor.children:
        supervisor.ready(child.name)
    (_version(tmp_path, "m", 3) / "model.onnx").unlink()
    shutil.rmtree(tmp_path / "m" / "1")
    reconciler.tick()
    assert [c.name for c in supervisor.children] == ["classifier-v1", "classifier-v2"]
    assert supervisor.retired == ["classifier-v1: m version 1 is gone from the repository"]


def test_a_version_given_up_on_is_not_selected_again(tmp_path: Path) -> None:
    _version(tmp_path, "m", 1)
    reconciler, supervisor = _reconciler(tmp_path, "latest:1")
    reconciler.tick()
    supervisor.ready("classifier-v1")
    _version(tmp_path, "m", 2)
    reconciler.tick()
    crashed = supervisor.children.pop()  # what Supervisor does when it gives up on it
    supervisor.abandoned.append(crashed.spec)
    reconciler.tick()
    reconciler.tick()
    assert [c.name for c in supervisor.children] == ["classifier-v1"]
    assert supervisor.retired == [] and reconciler.watch.failed == {("classifier", 2)}


def test_a_version_back_while_it_still_drains_waits_for_its_exit(tmp_path: Path) -> None:
    _version(tmp_path, "m", 1)
    reconciler, supervisor = _reconciler(tmp_path, "all")
    reconciler.tick()
    supervisor.ready("classifier-v1")
    shutil.rmtree(tmp_path / "m" / "1")
    reconciler.tick()
    assert supervisor.retired
    _version(tmp_path, "m", 1)
    reconciler.tick()  # same name still draining: not started twice
    assert [c.name for c in supervisor.children] == ["classifier-v1"]
    supervisor.children.clear()  # it exited
    reconciler.tick()
    assert [c.name for c in supervisor.children] == ["classifier-v1"]
