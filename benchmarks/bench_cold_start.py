"""Cold start from zero: the time from a held request to its answer when the model's
worker process is started at the moment the request is sent (process start + model
load + warm-up + first batch), per model family.

A private Redis and a gateway process (``python -m services.gateway``) with
``AXON_HOLD_WITHOUT_WORKERS=true`` and the model repository; no worker runs. For each
family and worker kind, ``--repeats`` times: POST the family's task request, start the
worker at once, wait for the 200; then one more request to the now warm worker (for
comparison), and stop the worker (SIGTERM). Worker kinds: ``bentoml`` (``bentoml serve
services.{family}.service:…``, what a Kubernetes pod runs) and ``standalone``
(``python -m services.runtime.standalone``, the queue worker without BentoML).

In a cluster, a request to a model at zero pays KEDA's polling interval + pod
scheduling + the image pull (if the node lacks the image) + this figure.

    python benchmarks/bench_cold_start.py --models-dir exported_models
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from services.runtime.redis_server import RedisServer, free_port

FAMILIES: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    # family: (model, task path, BentoML service, request body)
    "classifier": ("digits-cnn", "classify", "services.classifier.service:ClassifierService",
                   {"images": [[[[0.0] * 8 for _ in range(8)]]]}),
    "forecaster": ("sunspots-lstm", "forecast", "services.forecaster.service:ForecasterService",
                   {"history": [float(i % 7) for i in range(12)], "horizon": 1}),
    "generator": ("digits-gan", "generate", "services.generator.service:GeneratorService",
                  {"count": 1, "seed": 1, "format": "array"}),
}  # fmt: skip

WORKER_ENV = {
    # As k8s/base/axon.env (the model services' ConfigMap), CPU.
    "AXON_PROVIDER": "cpu",
    "AXON_INTRA_OP_THREADS": "1",
    "AXON_INTER_OP_THREADS": "1",
    "AXON_READ_BLOCK_MS": "500",
    "AXON_WARMUP": "true",
    "AXON_LOG_LEVEL": "WARNING",
}


@dataclass
class Result:
    family: str
    model: str
    kind: str
    cold_s: list[float]
    warm_s: list[float]


def _bentoml() -> list[str]:
    sibling = Path(sys.executable).with_name("bentoml")
    return [str(sibling)] if sibling.is_file() else [sys.executable, "-m", "bentoml"]


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the gateway exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit("the gateway did not become ready")


def _worker_argv(kind: str, family: str) -> list[str]:
    if kind == "bentoml":
        service = FAMILIES[family][2]
        return [*_bentoml(), "serve", service, "--host", "127.0.0.1", "--port", str(free_port())]
    return [sys.executable, "-m", "services.runtime.standalone", family]


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def measure(
    gateway: str, env: dict[str, str], family: str, kind: str, repeats: int, log: Path
) -> Result:
    model, task, _, body = FAMILIES[family]
    path = f"{gateway}/v1/models/{model}/{task}"
    cold: list[float] = []
    warm: list[float] = []
    with concurrent.futures.ThreadPoolExecutor(1) as pool, log.open("ab") as out:
        for _ in range(repeats):
            started = time.monotonic()
            answer = pool.submit(httpx.post, path, json=body, timeout=180)
            worker = subprocess.Popen(
                _worker_argv(kind, family), env=env, stdout=out, stderr=subprocess.STDOUT
            )
            try:
                response = answer.result(timeout=180)
                cold.append(time.monotonic() - started)
                if response.status_code != 200:
                    raise SystemExit(f"{family} {kind}: {response.status_code} {response.text}")
                again = time.monotonic()
                response = httpx.post(path, json=body, timeout=60)
                warm.append(time.monotonic() - again)
                if response.status_code != 200:
                    raise SystemExit(f"{family} {kind} warm: {response.status_code}")
            finally:
                _stop(worker)
    return Result(family, model, kind, cold, warm)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=Path("exported_models"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kinds", default="bentoml,standalone")
    parser.add_argument("--families", default=",".join(FAMILIES))
    args = parser.parse_args()
    models_dir = args.models_dir.resolve()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-cold-start-{os.getpid()}.log"
    results = []
    with RedisServer() as redis:
        port = free_port()
        env = {**os.environ, "AXON_REDIS_URL": redis.url, "AXON_MODELS_DIR": str(models_dir)}
        gateway_env = {**env, "AXON_HOLD_WITHOUT_WORKERS": "true", "AXON_TIMEOUT_MS": "120000",
                       "AXON_REGISTRY_REFRESH_MS": "500", "AXON_LOG_LEVEL": "WARNING"}  # fmt: skip
        with log.open("ab") as out:
            gateway = subprocess.Popen(
                [sys.executable, "-m", "services.gateway", "--port", str(port), "--grpc-port", "0"],
                env=gateway_env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, gateway)
            for kind in args.kinds.split(","):
                for family in args.families.split(","):
                    result = measure(url, {**env, **WORKER_ENV}, family, kind, args.repeats, log)
                    results.append(result)
                    print(_row(result), flush=True)
        finally:
            _stop(gateway)
    print(f"\n{os.cpu_count()} CPUs; {args.repeats} runs each; worker logs: {log}")
    return 0


def _row(r: Result) -> str:
    return (
        f"{r.family:<11} {r.model:<14} {r.kind:<10} cold start median "
        f"{statistics.median(r.cold_s):5.2f} s (min {min(r.cold_s):5.2f}, max "
        f"{max(r.cold_s):5.2f})   warm request {statistics.median(r.warm_s) * 1000:6.1f} ms"
    )


if __name__ == "__main__":
    sys.exit(main())
