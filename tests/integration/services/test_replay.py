"""Capture and replay through real Redis: the gateway app (its Redis transport) with
``AXON_CAPTURE_FRACTION=1`` in front of real worker processes serving two versions of
a classifier that disagree on some rows (other weights); ``axon replay --version 2``
then replays the captured requests and writes its report. Its numbers are checked
against a direct computation: the captured inputs run here in ONNX Runtime on both
versions' files, and the captured latencies read from the stream."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import redis as redis_sync
from starlette.testclient import TestClient

from services.cli import _parser
from services.contract.capture import Captured, capture_key
from services.contract.codec import decode_reply, decode_request
from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from services.replay_cli import run
from tests.support.onnx_models import write_poison_classifier
from tests.support.redis import RedisServer, wait_for
from tests.support.workers import FAST

MODEL = "replay-cnn"
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    write_poison_classifier(root, MODEL, 1, seed=0)
    write_poison_classifier(root, MODEL, 2, seed=7)
    return root


@pytest.fixture
def workers(redis_server: RedisServer, repo: Path) -> Iterator[None]:
    """A worker process per version (``services.runtime.standalone``)."""
    env = {**os.environ, **FAST, "PYTHONPATH": str(ROOT), "AXON_REDIS_URL": redis_server.url,
           "AXON_MODELS_DIR": str(repo), "AXON_MODEL": MODEL, "AXON_PROVIDER": "cpu",
           "AXON_LOG_LEVEL": "WARNING"}  # fmt: skip
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "services.runtime.standalone"],
            env={
                **env,
                "AXON_MODEL_VERSION": str(v),
                "AXON_INSTANCE": f"replay-w{v}-{os.getpid()}",
            },
        )
        for v in (1, 2)
    ]
    try:
        yield
    finally:
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def replay(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return run(_parser().parse_args(["replay", MODEL, *argv]), env={}, out=out), out.getvalue()


def top1(path: Path, images: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(["probabilities"], {"image": images})
    return np.argmax(probabilities, axis=1)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_a_replay_report_from_captured_traffic_matches_a_direct_computation(
    redis_server: RedisServer,
    repo: Path,
    workers: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = GatewaySettings.from_env(
        {"AXON_REDIS_URL": redis_server.url, "AXON_MODELS_DIR": str(repo),
         "AXON_GRPC_PORT": "0", "AXON_CAPTURE_FRACTION": "1",
         "AXON_GATEWAY_INSTANCE": f"replay-gw-{os.getpid()}"}
    )  # fmt: skip
    direct = redis_sync.Redis.from_url(redis_server.url)
    direct.delete(capture_key(MODEL))
    rng = np.random.default_rng(21)
    with TestClient(create_app(settings)) as gw:
        for version in (1, 2):
            wait_for(
                lambda v=version: (
                    gw.get(f"/v2/models/{MODEL}/versions/{v}/ready").status_code == 200
                ),
                timeout_s=60,
                what=f"{MODEL} v{version} ready",
            )
        assert replay("--version", "2", "--redis-url", redis_server.url)[0] == 1
        assert "no captures of 'replay-cnn'" in capsys.readouterr().err
        for i in range(40):
            pixels = rng.integers(0, 17, size=(1 + i % 3, 1, 2, 2)).astype(float).tolist()
            answer = gw.post(f"/v1/models/{MODEL}/classify", json={"images": pixels, "version": 1})
            assert answer.status_code == 200, answer.text
        wait_for(lambda: direct.xlen(capture_key(MODEL)) == 40, timeout_s=10, what="40 captures")
    code, printed = replay(
        "--version", "2", "--redis-url", redis_server.url, "--out", str(tmp_path / "reports"),
        "--concurrency", "2",
    )  # fmt: skip
    assert code == 0, printed
    (folder,) = (tmp_path / "reports").iterdir()
    report: dict[str, Any] = json.loads((folder / "report.json").read_text())
    # Direct: the captured inputs on both versions' ONNX files, and the stream's latencies.
    stored = [Captured.parse(i.decode(), dict(f)) for i, f in direct.xrange(capture_key(MODEL))]
    assert [row["request_id"] for row in report["requests"]] == [c.request_id for c in stored]
    agree = rows = 0
    differences = []
    for captured in stored:
        images = decode_request(captured.body).inputs["image"]
        v1, v2 = (
            top1(repo / MODEL / "1" / "model.onnx", images),
            top1(repo / MODEL / "2" / "model.onnx", images),
        )
        served = decode_reply(captured.reply).outputs or {}
        np.testing.assert_array_equal(np.argmax(served["probabilities"], axis=1), v1)
        same = int((v1 == v2).sum())
        agree, rows = agree + same, rows + len(v1)
        differences.append(1 - same / len(v1))
    assert 0 < agree < rows, "the two versions should disagree on some rows"
    assert report["outcomes"]["compared"] == report["compared"] == report["captures"] == 40
    assert report["captured_versions"] == {"1": 40}
    assert report["rows"] == rows
    assert report["top1_agreement"] == agree / rows
    assert report["mean_difference"] == pytest.approx(float(np.mean(differences)), abs=1e-12)
    captured_ms = [c.latency_us / 1000 for c in stored]
    assert report["latency_ms"]["captured"]["p50"] == pytest.approx(np.percentile(captured_ms, 50))
    assert report["latency_ms"]["captured"]["count"] == 40
    replay_ms = [row["replay_ms"] for row in report["requests"]]
    assert report["latency_ms"]["replay"]["p99"] == pytest.approx(np.percentile(replay_ms, 99))
    width, height = png_size(folder / "report.png")
    assert width > 200 and height > 100
    text = (folder / "report.md").read_text()
    assert f"top-1 agreement: {100 * agree / rows:.2f} %" in text
    assert f"report: {folder}" in printed


def test_replay_refuses_a_version_without_a_live_worker(
    redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = replay("--version", "9", "--redis-url", redis_server.url)
    assert code == 1
    assert "model 'replay-cnn' version 9 has no live worker" in capsys.readouterr().err
    assert replay("--version", "2")[0] == 2  # no Redis named
    assert "--redis-url or AXON_REDIS_URL is required" in capsys.readouterr().err
