"""The committed gRPC stubs (services/gateway/oip_pb) are what `make grpc-stubs`
generates from the committed protos with the pinned grpcio-tools, and they load beside
tritonclient's own stubs of the same protos (one process may hold both)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[3]


def _script() -> ModuleType:
    """scripts/grpc_stubs.py (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("grpc_stubs", ROOT / "scripts" / "grpc_stubs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_equal_a_fresh_generation(tmp_path: Path) -> None:
    script = _script()
    fresh = {path.name: path.read_text() for path in script.generate(tmp_path)}
    committed = {
        path.name: path.read_text()
        for path in script.PACKAGE.iterdir()
        if path.suffix in (".py", ".pyi") and path.name != "__init__.py"
    }
    assert sorted(fresh) == sorted(committed)
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"{stale} differ from the protos: run `make grpc-stubs` and commit"


def test_stubs_share_descriptors_with_tritonclient() -> None:
    import tritonclient.grpc.service_pb2 as theirs

    from services.gateway.oip_pb import grpc_service_pb2 as ours

    assert ours.ModelInferRequest.DESCRIPTOR.full_name == "inference.ModelInferRequest"
    assert ours.DESCRIPTOR.serialized_pb == theirs.DESCRIPTOR.serialized_pb
    assert importlib.util.find_spec("services.gateway.oip_pb.health_pb2") is not None
