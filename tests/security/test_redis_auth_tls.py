"""Redis AUTH and TLS through ``AXON_REDIS_URL``: a real redis-server started with
``--requirepass`` and/or ``--tls-port`` (a throwaway CA and server certificate made at
test time with ``cryptography``), a real worker and a real gateway using
``redis://:password@…`` / ``rediss://…?ssl_ca_certs=…``. Wrong or missing credentials,
a plain-text client on the TLS port, and a client that does not trust the CA all fail
closed: the gateway reports not ready and answers 503, never serves."""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis as redis_py
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.runtime.redis_server import find_redis_server, free_port
from tests.chaos.harness import Procs
from tests.e2e.payloads import infer_image
from tests.support.redis import wait_for

PASSWORD = "s3cret-for-tests-only"
ROOT = Path(__file__).resolve().parents[2]


def _tls_supported() -> bool:
    """redis-server built with TLS knows --tls-port (Debian's 7.x does); without TLS it
    refuses the directive. With both ports 0 it exits at once either way."""
    probe = subprocess.run(
        [find_redis_server(), "--port", "0", "--tls-port", "0"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return "bad directive" not in (probe.stdout + probe.stderr).lower()


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path


def make_certs(folder: Path) -> Certs:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "axon test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = Certs(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AXON_")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def _start_redis(
    procs: Procs,
    args: list[str],
    probe: redis_py.Redis,  # type: ignore[type-arg]
) -> None:
    process = procs.spawn(
        "redis", [find_redis_server(), "--bind", "127.0.0.1", "--save", "", *args], _env()
    )

    def up() -> bool:
        assert process.poll() is None, procs.log("redis")
        try:
            return bool(probe.ping())
        except redis_py.RedisError:
            return False

    wait_for(up, timeout_s=15, what="redis-server up")


def _serve(procs: Procs, url: str, models: Path, name: str) -> str:
    """A worker and a gateway using ``url``; returns the gateway URL once it serves."""
    procs.spawn(
        f"{name}-worker",
        [sys.executable, "-m", "services.runtime.standalone", "classifier"],
        _env(
            AXON_REDIS_URL=url,
            AXON_MODELS_DIR=str(models),
            AXON_PROVIDER="cpu",
            AXON_INSTANCE=f"{name}-worker",
            AXON_MAX_QUEUE_DELAY_MS="0",
        ),
    )
    return _gateway(procs, url, models, name)


def _gateway(procs: Procs, url: str, models: Path, name: str) -> str:
    port = free_port()
    process = procs.spawn(
        f"{name}-gateway",
        [sys.executable, "-m", "services.gateway", "--port", str(port)],
        _env(
            AXON_REDIS_URL=url,
            AXON_MODELS_DIR=str(models),
            AXON_REDIS_TIMEOUT_S="2",
            AXON_REGISTRY_REFRESH_MS="100",
            AXON_GRPC_PORT="0",
            AXON_REPLY_BLOCK_S="0.5",
        ),
    )
    base = f"http://127.0.0.1:{port}"

    def live() -> bool:
        assert process.poll() is None, procs.log(f"{name}-gateway")
        try:
            return httpx.get(f"{base}/v2/health/live", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(live, timeout_s=60, what=f"{name} gateway live")
    return base


def _serves(base: str) -> None:
    def answered() -> bool:
        response = httpx.post(f"{base}/v2/models/digits-cnn/infer", json=infer_image(1), timeout=30)
        return response.status_code == 200

    wait_for(answered, timeout_s=60, what="inference through the secured Redis")
    assert httpx.get(f"{base}/healthz/ready", timeout=5).status_code == 200


def _refuses(base: str) -> None:
    assert httpx.get(f"{base}/healthz/ready", timeout=5).status_code == 503
    response = httpx.post(f"{base}/v2/models/digits-cnn/infer", json=infer_image(1), timeout=30)
    assert response.status_code == 503, response.text
    assert "Traceback" not in response.text and PASSWORD not in response.text


def test_redis_auth(model_repo: Path, tmp_path: Path) -> None:
    procs = Procs(tmp_path)
    port = free_port()
    try:
        _start_redis(
            procs,
            ["--port", str(port), "--requirepass", PASSWORD],
            redis_py.Redis(port=port, password=PASSWORD),
        )
        with pytest.raises(redis_py.AuthenticationError):
            redis_py.Redis(port=port).ping()
        good = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
        _serves(_serve(procs, good, model_repo, "auth"))
        for name, url in (
            ("noauth", f"redis://127.0.0.1:{port}/0"),
            ("badauth", f"redis://:wrong-password@127.0.0.1:{port}/0"),
        ):
            _refuses(_gateway(procs, url, model_repo, name))
    finally:
        procs.close()


def test_redis_tls_with_auth(model_repo: Path, tmp_path: Path) -> None:
    if not _tls_supported():
        pytest.skip("this redis-server was built without TLS")
    certs = make_certs(tmp_path)
    procs = Procs(tmp_path)
    port = free_port()
    trusted = redis_py.Redis(port=port, password=PASSWORD, ssl=True, ssl_ca_certs=str(certs.ca))
    try:
        _start_redis(
            procs,
            [
                "--port",
                "0",
                "--tls-port",
                str(port),
                "--tls-cert-file",
                str(certs.cert),
                "--tls-key-file",
                str(certs.key),
                "--tls-ca-cert-file",
                str(certs.ca),
                "--tls-auth-clients",
                "no",
                "--requirepass",
                PASSWORD,
            ],
            trusted,
        )
        with pytest.raises(redis_py.ConnectionError):
            redis_py.Redis(port=port, password=PASSWORD, socket_timeout=2).ping()
        query = f"ssl_ca_certs={certs.ca}&ssl_cert_reqs=required"
        good = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?{query}"
        _serves(_serve(procs, good, model_repo, "tls"))
        for name, url in (
            ("plaintext", f"redis://:{PASSWORD}@127.0.0.1:{port}/0"),
            ("untrusted", f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_cert_reqs=required"),
            ("tls-badauth", f"rediss://:nope@127.0.0.1:{port}/0?{query}"),
        ):
            _refuses(_gateway(procs, url, model_repo, name))
    finally:
        procs.close()
