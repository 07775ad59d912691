"""What the serving stack needs from a real cluster, beyond rendering and validating:

- the GPU overlay's ReadWriteMany model volume names the storage class the user must
  choose (a required parameter: a placeholder until set, which `make k8s-render` and the
  API server refuse), and docs/deployment.md has that step, with examples per cloud;
- the gateway's termination grace period covers the longest deadline a client may ask
  for (uvicorn waits for every request in flight), the model services' their drain;
- the gateway's readiness probe rides out a Redis blip instead of emptying the Service;
- the serving images install ONNX Runtime by an explicit pinned version on every
  platform (never one read from another package), the GPU one a release of the CUDA
  major its base image has; docs/deployment.md states the versions and the driver."""

from __future__ import annotations

import ast
import dataclasses
import importlib.metadata
import inspect
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from services.base import DRAIN_TIMEOUT_S
from services.gateway.settings import GatewaySettings
from tests.k8s.manifests import (
    DOCKER,
    K8S,
    ROOT,
    SERVING_OVERLAYS,
    Container,
    Dockerfile,
    Obj,
    containers,
    find,
    kubectl,
    parse_dockerfile,
    pod_labels,
    render,
)
from tests.k8s.test_config import gateway, provided
from tests.k8s.test_render_and_schema import KUBERNETES_VERSIONS

DOC = (ROOT / "docs" / "deployment.md").read_text()
GPU_PARAMS = K8S / "overlays" / "gpu" / "params.env"
STORAGE_CLASS_KEY = "MODELS_STORAGE_CLASS"
PLACEHOLDER = "SET_ME_"
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
"""What the API server accepts as a storageClassName (RFC 1123 subdomain, ≤ 253)."""

SHUTDOWN_MARGIN_S = 5
"""Closing Redis, the image pool and the process itself, after the drain."""
REDIS_BLIP_S = 30
"""A Redis outage every gateway must ride out in the endpoints: a container restart with
its AOF reload, a failover. The readiness probe may fail for at least this long."""
ISOLATED_POD_S = 120
"""…and at most this long: a gateway that alone cannot reach Redis leaves the endpoints."""

ORT_CUDA_LINES = {12: (Version("1.19"), Version("1.27")), 13: (Version("1.27"), None)}
"""onnxruntime-gpu on PyPI by CUDA major: [first, end) release lines. 1.19 made CUDA 12
the default (onnxruntime.ai, CUDA Execution Provider); 1.27.0 is the first whose wheels
require nvidia-cuda-runtime 13 (the wheels' metadata; 1.26.0 still requires -cu12)."""
MIN_DRIVER = {12: 525, 13: 580}
"""Minimum Linux driver per CUDA major (NVIDIA CUDA compatibility, minor version
compatibility table: 12.x ≥ 525, 13.x ≥ 580)."""
SERVING_DOCKERFILES = ("Dockerfile.gateway", "Dockerfile.service", "Dockerfile.service-gpu")
CPU_DOCKERFILES = ("Dockerfile.gateway", "Dockerfile.service")
ORT_PACKAGES = ("onnxruntime", "onnxruntime-gpu")


def section(title: str) -> str:
    """The text of docs/deployment.md's ``## title`` section (up to the next ``## ``)."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", DOC, re.M | re.S)
    assert match, f"docs/deployment.md has no section '## {title}'"
    return match[1]


def prestop_s(c: Container) -> int:
    command = c.spec["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep", c.where
    return int(command[1])


def component(c: Container) -> str | None:
    return pod_labels(c.workload).get("app.kubernetes.io/component")


# --- 1. The GPU overlay's ReadWriteMany storage class: a required parameter ----------


def params_value(text: str, key: str) -> str | None:
    values = re.findall(rf"^{key}=(.*)$", text, re.M)
    assert len(values) <= 1, f"{key} set twice"
    return values[0].strip() if values else None


def kustomize(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=120
    )


def gpu_copy(tmp_path: Path, params: str) -> Path:
    """A copy of k8s/ whose GPU overlay has ``params`` as its params.env."""
    shutil.copytree(K8S, tmp_path / "k8s")
    (tmp_path / "k8s" / "overlays" / "gpu" / "params.env").write_text(params)
    return tmp_path / "k8s" / "overlays" / "gpu"


def with_storage_class(value: str) -> str:
    text = GPU_PARAMS.read_text()
    return re.sub(rf"^{STORAGE_CLASS_KEY}=.*$", f"{STORAGE_CLASS_KEY}={value}", text, flags=re.M)


def test_the_gpu_claim_takes_its_storage_class_from_the_parameter(tmp_path: Path) -> None:
    proc = kustomize(gpu_copy(tmp_path, with_storage_class("efs-sc")))
    assert proc.returncode == 0, proc.stderr
    objs = tuple(o for o in yaml.safe_load_all(proc.stdout) if o)
    claim = find(objs, "PersistentVolumeClaim", "axon-models")
    assert claim["spec"]["storageClassName"] == "efs-sc"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    names = {o["metadata"]["name"] for o in objs if o["kind"] == "ConfigMap"}
    assert not [n for n in names if "param" in n], f"the parameters are rendered: {names}"
    shipped = find(render("overlays/gpu"), "PersistentVolumeClaim", "axon-models")
    assert shipped["spec"]["storageClassName"] == params_value(
        GPU_PARAMS.read_text(), STORAGE_CLASS_KEY
    ), "the shipped overlay does not use params.env"


def test_a_missing_storage_class_parameter_fails_the_render(tmp_path: Path) -> None:
    text = re.sub(rf"^{STORAGE_CLASS_KEY}=.*\n", "", GPU_PARAMS.read_text(), flags=re.M)
    proc = kustomize(gpu_copy(tmp_path, text))
    assert proc.returncode != 0 and STORAGE_CLASS_KEY in proc.stderr, proc.stderr


def make_render(overlay: str) -> subprocess.CompletedProcess[str]:
    """`make k8s-render OVERLAY=…` without its install prerequisites (-o)."""
    return subprocess.run(
        ["make", "-s", "-o", "install", "-o", "k8s-tools", "k8s-render", f"OVERLAY={overlay}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_placeholder_is_refused_until_it_is_set() -> None:
    value = params_value(GPU_PARAMS.read_text(), STORAGE_CLASS_KEY)
    assert value, f"{GPU_PARAMS.name}: {STORAGE_CLASS_KEY} must not be empty (= default class)"
    proc = make_render("gpu")
    if value.startswith(PLACEHOLDER):
        # The API server refuses the claim too: a placeholder is no valid class name.
        assert not DNS_SUBDOMAIN.fullmatch(value), value
        assert proc.returncode != 0, "make k8s-render printed a manifest with a placeholder"
        assert value in proc.stderr and "params.env" in proc.stderr, proc.stderr
        assert not proc.stdout.strip()
    else:
        assert DNS_SUBDOMAIN.fullmatch(value) and len(value) <= 253, value
        assert proc.returncode == 0, proc.stderr
    cpu = make_render("cpu")
    assert cpu.returncode == 0 and "kind: Deployment" in cpu.stdout, cpu.stderr


def test_docs_give_the_storage_class_step_before_applying_the_gpu_overlay() -> None:
    gpu = section("A GPU cluster")
    step = gpu.find(STORAGE_CLASS_KEY)
    apply = gpu.find("kubectl apply -k k8s/overlays/gpu")
    assert 0 <= step < apply, "set the storage class before `kubectl apply -k k8s/overlays/gpu`"
    assert "k8s/overlays/gpu/params.env" in gpu and "make k8s-render OVERLAY=gpu" in gpu
    for example in ("efs.csi.aws.com", "standard-rwx", "azurefile-csi"):  # EKS, GKE, AKS
        assert example in gpu, f"docs: no {example} example"


# --- 2. Termination grace periods against deadlines and drains ----------------------


def gateway_settings(objs: tuple[Obj, ...]) -> GatewaySettings:
    env = {k: re.sub(r"[<>]", "", v) for k, v in provided(gateway(objs), objs).items()}
    return GatewaySettings.from_env(env)


def longest_request_s(settings: GatewaySettings) -> float:
    """How long after its arrival a request may still be in flight: its deadline (at
    most AXON_MAX_TIMEOUT_MS, or a default above it), or a slow body's timeout."""
    deadlines_ms = [
        settings.max_timeout_ms,
        settings.timeout_ms,
        *settings.model_timeouts_ms.values(),
    ]
    return max(max(deadlines_ms) / 1000, settings.body_timeout_s)


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_gateway_grace_covers_the_longest_deadline(overlay: str) -> None:
    objs = render(overlay)
    gw = gateway(objs)
    settings = gateway_settings(objs)
    # gRPC calls drain alongside HTTP requests (both stop taking new work at SIGTERM, and
    # each call in flight ends by its deadline): the longest deadline bounds both.
    needed = prestop_s(gw) + longest_request_s(settings) + SHUTDOWN_MARGIN_S
    grace = gw.pod["terminationGracePeriodSeconds"]
    assert grace >= needed, (
        f"{gw.where}: terminationGracePeriodSeconds {grace} < preStop {prestop_s(gw)} + "
        f"longest request {longest_request_s(settings):g} (AXON_MAX_TIMEOUT_MS "
        f"{settings.max_timeout_ms}) + {SHUTDOWN_MARGIN_S}: "
        "requests in flight at shutdown would be cut"
    )


def test_the_grace_period_rule_can_fail() -> None:
    settings = gateway_settings(render("overlays/cpu"))
    longer = dataclasses.replace(settings, max_timeout_ms=3_600_000)
    assert longest_request_s(longer) == 3600
    per_model = dataclasses.replace(settings, model_timeouts_ms={"digits-cnn": 4_000_000})
    assert longest_request_s(per_model) == 4000
    slow_body = dataclasses.replace(settings, max_timeout_ms=1_000, timeout_ms=1)
    assert longest_request_s(slow_body) == settings.body_timeout_s


def uvicorn_drain_limit_s() -> float | None:
    """``timeout_graceful_shutdown`` given to uvicorn in services/gateway/server.py (None:
    uvicorn waits for every request in flight, however long)."""
    tree = ast.parse((ROOT / "services" / "gateway" / "server.py").read_text())
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and ast.unparse(node.func) in ("uvicorn.run", "uvicorn.Config")
    ]
    assert calls, "server.py no longer starts uvicorn: check how the gateway drains"
    for call in calls:
        for keyword in call.keywords:
            if keyword.arg == "timeout_graceful_shutdown":
                assert isinstance(keyword.value, ast.Constant), "a literal, so it can be checked"
                value = keyword.value.value
                return None if value is None else float(value)
    return None


def test_uvicorn_drain_does_not_cut_a_deadline() -> None:
    limit = uvicorn_drain_limit_s()
    settings = gateway_settings(render("overlays/cpu"))
    assert limit is None or limit >= longest_request_s(settings), (
        f"uvicorn cancels requests after {limit} s of drain, before their deadline"
    )


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_model_service_drain_fits_bentoml_and_the_grace_period(overlay: str) -> None:
    from bentoml.serving import create_watcher

    # BentoML's arbiter waits this long for a worker before killing it: longer than the
    # drain, so the pod's grace period alone bounds it.
    watcher_grace = re.search(r"graceful_timeout=(\d+)", inspect.getsource(create_watcher))
    assert watcher_grace and int(watcher_grace[1]) >= DRAIN_TIMEOUT_S
    services = [c for c in containers(render(overlay)) if component(c) == "model-service"]
    assert services
    for c in services:
        needed = prestop_s(c) + DRAIN_TIMEOUT_S + SHUTDOWN_MARGIN_S
        assert c.pod["terminationGracePeriodSeconds"] >= needed, c.where


# --- 4. Gateway readiness through a Redis blip --------------------------------------


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_gateway_readiness_rides_out_a_redis_blip(overlay: str) -> None:
    gw = gateway(render(overlay))
    probe = gw.spec["readinessProbe"]
    period, failures = probe.get("periodSeconds", 10), probe.get("failureThreshold", 3)
    tolerated = period * failures
    assert REDIS_BLIP_S <= tolerated <= ISOLATED_POD_S, (
        f"{gw.where}: readiness fails after {tolerated} s; a Redis blip of {REDIS_BLIP_S} s "
        f"would empty the Service (ingress 502/503), or an isolated pod stay > {ISOLATED_POD_S} s"
    )
    assert probe.get("successThreshold", 1) == 1, "back in the endpoints at the first success"
    assert probe.get("timeoutSeconds", 1) < period
    # Still Redis-bound (a pod that alone lost Redis leaves), and nothing else is: a Redis
    # outage must never restart gateways or hold back their start.
    assert probe["httpGet"]["path"] == "/healthz/ready"
    for other in ("livenessProbe", "startupProbe"):
        assert gw.spec[other]["httpGet"]["path"] in ("/v2/health/live", "/healthz/live"), other


def test_docs_state_the_readiness_trade_off() -> None:
    probes = section("Ports and probes")
    gw = gateway(render("overlays/cpu"))
    probe = gw.spec["readinessProbe"]
    row = next(line for line in probes.splitlines() if line.startswith("| readiness |"))
    assert f"every {probe['periodSeconds']} s, {probe['failureThreshold']} failures" in row, row
    assert "Redis blip" in probes


# --- 3. ONNX Runtime in the images: explicit pins, a CUDA-major line ----------------


def run_lines(df: Dockerfile, stage: int | None = None) -> list[str]:
    stages = df.stages if stage is None else [df.stages[stage]]
    return [value for s in stages for key, value in s.instructions if key == "RUN"]


def pins(df: Dockerfile) -> dict[str, str]:
    """``package==${ARG}`` installed by a RUN: package → the ARG's default."""
    found: dict[str, str] = {}
    for run in run_lines(df):
        for package, arg in re.findall(r"\b(onnxruntime(?:-gpu)?)==\$\{?(\w+)\}?", run):
            assert arg in df.args, f"{df.path.name}: {package}=={arg}: not a declared ARG"
            found[package] = df.args[arg]
    return found


@pytest.mark.parametrize("file", SERVING_DOCKERFILES)
def test_onnxruntime_is_pinned_by_a_declared_version(file: str) -> None:
    df = parse_dockerfile(DOCKER / file)
    runs = " ".join(run_lines(df))
    assert "pip show" not in runs and not re.search(r"\w+=\"?\$\(", runs), (
        f"{file}: a version read at build time can be empty (arm64: no onnxruntime-gpu)"
    )
    for match in re.finditer(r"==\$\{?(\w+)\}?", runs):
        arg = match[1]
        assert re.fullmatch(r"\d+\.\d+\.\d+", df.args.get(arg, "")), f"{file}: {arg} default"
        for i, stage in enumerate(df.stages):
            if any(f"${{{arg}}}" in r or f"${arg}" in r for r in run_lines(df, i)):
                assert ("ARG", arg) in stage.instructions, f"{file}: stage {i}: ARG {arg} unset"
    assert pins(df), f"{file}: installs ONNX Runtime at no pinned version"


def test_serving_images_share_one_onnxruntime_release_that_pyproject_admits() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = {Requirement(d).name: Requirement(d).specifier for d in dependencies}
    releases = set()
    for file in SERVING_DOCKERFILES:
        for package, version in pins(parse_dockerfile(DOCKER / file)).items():
            assert version in wanted[package], f"{file}: {package}=={version} vs pyproject"
            releases.add(version)
    assert len(releases) == 1, f"CPU and GPU images on different releases: {releases}"
    assert set(pins(parse_dockerfile(DOCKER / "Dockerfile.service-gpu"))) == {"onnxruntime-gpu"}
    for file in CPU_DOCKERFILES:
        assert set(pins(parse_dockerfile(DOCKER / file))) == {"onnxruntime"}, file


def requirements_step(df: Dockerfile) -> str:
    """The shell command of the RUN step that writes the requirements file."""
    for run in run_lines(df):
        head = run.split(" && ")[0]
        if "tomllib" in head:
            return head.split(" > ")[0]
    raise AssertionError(f"{df.path.name}: no step derives requirements from pyproject")


@pytest.mark.parametrize("file", CPU_DOCKERFILES)
def test_cpu_images_install_pyprojects_dependencies_without_the_gpu_build(file: str) -> None:
    """Runs the image's own requirement step on pyproject.toml: the same on every
    platform (markers are kept for pip to evaluate)."""
    df = parse_dockerfile(DOCKER / file)
    step = requirements_step(df)
    proc = subprocess.run(
        ["sh", "-c", step.replace("python ", f"{shlex.quote(sys.executable)} ", 1)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    names = [Requirement(line).name for line in lines]
    assert not set(names) & set(ORT_PACKAGES), names
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    others = [d for d in dependencies if Requirement(d).name not in ORT_PACKAGES]
    assert lines == others, "every other dependency, unchanged"
    package_installs = [r for r in run_lines(df) if re.search(r"pip install [^&]*\s\.(\s|$)", r)]
    assert package_installs and all("--no-deps ." in r for r in package_installs), (
        f"{file}: `pip install .` would bring pyproject's onnxruntime-gpu back"
    )


def gpu_image() -> tuple[Dockerfile, int, Version]:
    df = parse_dockerfile(DOCKER / "Dockerfile.service-gpu")
    tag = df.resolve(df.stages[0].base).partition("@")[0].rpartition(":")[2]
    return df, int(tag.split(".")[0]), Version(pins(df)["onnxruntime-gpu"])


def test_gpu_image_pins_a_release_of_its_cuda_major() -> None:
    df, cuda_major, ort = gpu_image()
    assert df.args.get("ORT_CUDA_MAJOR") == str(cuda_major), "ORT_CUDA_MAJOR vs the base image"
    first, end = ORT_CUDA_LINES[cuda_major]
    assert first <= ort and (end is None or ort < end), (
        f"onnxruntime-gpu {ort} is no CUDA {cuda_major} build"
    )
    runs = " ".join(run_lines(df, 0))
    # The build itself checks the wheel's CUDA major against the ARG and the base image.
    assert (
        "build_and_package_info" in runs
        and "${ORT_CUDA_MAJOR}" in runs
        and "${CUDA_VERSION}" in runs
    )
    assert re.search(r"uname -m.*x86_64", runs), "refuse arm64 builds: no aarch64 wheels"
    try:
        installed = importlib.metadata.version("onnxruntime-gpu")
    except importlib.metadata.PackageNotFoundError:
        return
    if Version(installed) == ort:  # the same wheel here: check the fact itself
        from onnxruntime.capi.build_and_package_info import cuda_version

        assert cuda_version.split(".")[0] == str(cuda_major), cuda_version


# --- 5. Versions stated in docs/deployment.md ---------------------------------------


def test_docs_state_the_tested_versions() -> None:
    versions = section("Tested versions")
    df, cuda_major, ort = gpu_image()
    cuda_tag = df.resolve(df.stages[0].base).partition("@")[0].rpartition(":")[2]
    assert f"onnxruntime-gpu` {ort}" in versions or f"onnxruntime-gpu {ort}" in versions
    assert f"CUDA {cuda_major}" in versions and cuda_tag.split("-")[0] in versions
    assert re.search(rf"≥ ?{MIN_DRIVER[cuda_major]}\b", versions), "the minimum NVIDIA driver"
    assert f"Kubernetes {KUBERNETES_VERSIONS[0]}" in versions, "the oldest Kubernetes checked"
    assert "cuDNN 9" in versions
    images = section("Images")
    assert f"onnxruntime-gpu {ort}" in images and f"CUDA {cuda_major}" in images


def test_docs_state_the_shutdown_rule() -> None:
    shutdown = section("Shutdown and grace periods")
    grace = gateway(render("overlays/cpu")).pod["terminationGracePeriodSeconds"]
    assert f"`terminationGracePeriodSeconds` {grace}" in shutdown, "the gateway's grace period"
    assert "AXON_MAX_TIMEOUT_MS" in shutdown and "timeout_graceful_shutdown" in shutdown
    assert "begin_drain" in shutdown, "how gRPC calls drain is stated"
