"""Regenerate the committed OIP gRPC stubs in ``services/gateway/oip_pb`` from the
``.proto`` files next to them (``make grpc-stubs``).

The protos are Triton's (``triton-inference-server/common``, ``protobuf/``, commit
83adf7c), unchanged: package ``inference`` (``GRPCInferenceService``) and
``grpc.health.v1`` (``Health``). They are compiled under their bare file names, as
``tritonclient`` compiles them, so the descriptors are byte-identical and both stub sets
load in one process. ``protoc`` writes top-level imports (``import model_config_pb2``);
they are made package-relative here. The pinned ``grpcio-tools`` (pyproject ``dev``)
makes the output reproducible: ``tests/unit/gateway/test_grpc_stubs.py`` fails when the
committed files differ from a fresh run.

Usage: ``python scripts/grpc_stubs.py [OUT_DIR]`` (default: the package itself).
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "services" / "gateway" / "oip_pb"
PROTOS = ("grpc_service.proto", "model_config.proto", "health.proto")
KEEP = re.compile(r"^(grpc_service|model_config|health)_pb2(\.pyi|\.py|_grpc\.py)$")
# protoc's top-level imports of sibling stubs → relative imports inside the package.
_SIBLING_IMPORT = re.compile(r"^import (grpc_service_pb2|model_config_pb2|health_pb2) as ", re.M)


def generate(out_dir: Path, proto_dir: Path = PACKAGE) -> list[Path]:
    """Compile ``PROTOS`` from ``proto_dir`` into ``out_dir``; returns the files written
    (``*_pb2.py``, ``*_pb2.pyi``, ``grpc_service_pb2_grpc.py``, ``health_pb2_grpc.py``)."""
    from grpc_tools import protoc  # dev dependency, only needed to regenerate

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        args = [
            "protoc",
            f"-I{proto_dir}",
            f"--python_out={scratch}",
            f"--pyi_out={scratch}",
            f"--grpc_python_out={scratch}",
            *PROTOS,
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed: {' '.join(args)}")
        written = []
        for path in sorted(Path(scratch).iterdir()):
            if not KEEP.match(path.name) or path.name == "model_config_pb2_grpc.py":
                continue
            text = _SIBLING_IMPORT.sub(r"from . import \1 as ", path.read_text())
            target = out_dir / path.name
            target.write_text(text)
            written.append(target)
    return written


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else PACKAGE
    for path in generate(out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
