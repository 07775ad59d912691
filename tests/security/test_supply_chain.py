"""Model integrity and code hygiene:

- a worker refuses (exits, naming the file) a model whose ``model.onnx`` does not match
  the ``sha256`` in its metadata.json: one flipped byte, or another model's file;
- nothing in ``services/`` deserialises with pickle/marshal/shelve, evaluates code
  (``eval``/``exec``/``compile``/``__import__``), or loads numpy/YAML/torch files in an
  unsafe mode;
- no request field can choose a filesystem path: the gateway opens no file while
  serving, and requests naming paths in every field are refused without effect.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from services.contract.errors import ModelRepositoryError
from services.runtime.repository import ModelRepository
from tests.e2e.payloads import infer_image
from tests.security.conftest import SecurityStack

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"


def _copy(model_repo: Path, target: Path) -> Path:
    shutil.copytree(model_repo / "digits-cnn", target / "digits-cnn")
    return target / "digits-cnn" / "1" / "model.onnx"


def _worker_refuses(models: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AXON_")}
    env.update(
        PYTHONPATH=str(ROOT),
        AXON_REDIS_URL="redis://127.0.0.1:1/0",  # never reached: the model is refused first
        AXON_MODELS_DIR=str(models),
        AXON_PROVIDER="cpu",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "services.runtime.standalone", "classifier"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
    return proc.stdout + proc.stderr


def test_flipped_byte_refused(model_repo: Path, tmp_path: Path) -> None:
    onnx = _copy(model_repo, tmp_path)
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0x01
    onnx.write_bytes(bytes(data))
    with pytest.raises(ModelRepositoryError, match="sha256 mismatch"):
        ModelRepository(tmp_path).load("digits-cnn")
    output = _worker_refuses(tmp_path)
    assert "sha256 mismatch" in output and str(onnx) in output, output[-2000:]


def test_swapped_model_refused(model_repo: Path, tmp_path: Path) -> None:
    onnx = _copy(model_repo, tmp_path)
    shutil.copyfile(model_repo / "digits-gan" / "1" / "model.onnx", onnx)
    assert "sha256 mismatch" in _worker_refuses(tmp_path)


UNSAFE_MODULES = {
    "pickle",
    "cPickle",
    "_pickle",
    "marshal",
    "shelve",
    "dill",
    "cloudpickle",
    "joblib",
    "jsonpickle",
}
UNSAFE_CALLS = {"eval", "exec", "compile", "__import__"}


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [
                f"{where} import {a.name}"
                for a in node.names
                if a.name.split(".")[0] in UNSAFE_MODULES
            ]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in UNSAFE_MODULES:
                found.append(f"{where} from {node.module} import …")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if isinstance(func, ast.Name) and name in UNSAFE_CALLS:
                found.append(f"{where} {name}()")
            keywords = {k.arg: k.value for k in node.keywords}
            allow = keywords.get("allow_pickle")
            if isinstance(allow, ast.Constant) and allow.value is True:
                found.append(f"{where} allow_pickle=True")
            if name == "load" and isinstance(func, ast.Attribute):
                owner = ast.unparse(func.value)
                if owner == "yaml" and "Loader" not in keywords:
                    found.append(f"{where} yaml.load without a safe Loader")
                if owner == "torch":
                    found.append(f"{where} torch.load in services")
            if (
                name in ("loads", "load", "Unpickler")
                and isinstance(func, ast.Attribute)
                and ast.unparse(func.value) in UNSAFE_MODULES
            ):
                found.append(f"{where} {ast.unparse(func)}")
    return found


def test_no_unsafe_deserialisation_or_eval_in_services() -> None:
    files = sorted(SERVICES.rglob("*.py"))
    assert len(files) > 20
    violations = [v for path in files for v in _violations(path)]
    assert not violations, violations


def test_the_scanner_catches_what_it_looks_for(tmp_path: Path) -> None:
    bad = ROOT / "services" / "_scanner_probe_tmp.py"
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import pickle\nfrom marshal import loads\nimport numpy as np\n"
        "eval('1')\nnp.load('x', allow_pickle=True)\npickle.loads(b'')\n"
    )
    shutil.copyfile(sample, bad)
    try:
        found = _violations(bad)
    finally:
        bad.unlink()
    assert len(found) == 5, found


# ------------------------------------------------------------------ paths from requests

FS_CALLS = {
    "open",
    "Path",
    "read_text",
    "read_bytes",
    "write_text",
    "write_bytes",
    "glob",
    "rglob",
    "iterdir",
    "listdir",
    "scandir",
    "load",
    "ModelRepository",
    "InferenceSession",
    "add_repository",
    "unlink",
    "remove",
    "rmtree",
}
ALLOWED = {
    # Read once at start-up from AXON_MODELS_DIR (settings), never from a request.
    ("services/gateway/registry.py", "add_repository"),
    ("services/gateway/settings.py", "from_env"),
    ("services/gateway/app.py", "lifespan"),
    # Path(f"heartbeat of worker …"): only a label for error messages, never opened.
    ("services/gateway/registry.py", "refresh"),
    # Swagger UI's files for /docs: found and read into memory once, by the lifespan
    # (SwaggerFiles.installed()); serving reads only that memory.
    ("services/gateway/docs_ui.py", "installed"),
    ("services/gateway/docs_ui.py", "__init__"),
    # The /ui console's files, read once in the lifespan (ConsoleFiles.installed).
    ("services/gateway/console/assets.py", "installed"),
    ("services/gateway/console/assets.py", "__init__"),
    # Image.open(io.BytesIO(raw)): decodes a request's image from memory.
    ("services/gateway/images.py", "open_image"),
}
"""(file, enclosing function) where the gateway may touch the filesystem."""


def _fs_uses(path: Path) -> list[tuple[str, str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    rel = str(path.relative_to(ROOT))
    uses = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = function
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                inner = child.name
            if isinstance(child, ast.Call):
                func = child.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                owner = ast.unparse(func.value) if isinstance(func, ast.Attribute) else ""
                if name in FS_CALLS and owner not in ("json", "msgpack"):
                    uses.append((rel, inner, child.lineno))
            visit(child, inner)

    visit(tree, "<module>")
    return uses


def test_gateway_touches_files_only_at_start_up() -> None:
    """Request handlers never build a path or open a file; Pillow decodes PNGs from
    memory (``Image.open(BytesIO)``)."""
    uses = [u for p in sorted((SERVICES / "gateway").rglob("*.py")) for u in _fs_uses(p)]
    unexpected = [
        u
        for u in uses
        if (u[0], u[1]) not in ALLOWED
        and not (u[0].endswith("images.py") and u[1] == "png_to_pixels")
    ]
    assert not unexpected, unexpected


PATHS = [
    "../../../../etc/passwd",
    "/etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e/%2e%2e/canary",
    "~/x",
    "\\..\\..\\x",
]


def test_no_request_field_chooses_a_path(stack: SecurityStack, tmp_path: Path) -> None:
    """A real, valid model sits outside the repository; no model name, version, body field
    or parameter can make the gateway or a worker serve it or read any file."""
    canary = tmp_path / "canary"
    shutil.copytree(stack.models_dir / "digits-cnn", canary / "digits-cnn")
    gw = stack.gateway("sec-paths")
    outside = str(canary / "digits-cnn")
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        for name in [*PATHS, outside, f"..{outside}"]:
            for route in (
                f"/v2/models/{name}/infer",
                f"/v1/models/{name}/classify",
                f"/v2/models/{name}",
                f"/v2/models/digits-cnn/versions/{name}/infer",
            ):
                response = http.post(route, json=infer_image(1))
                assert response.status_code in (404, 405), (route, response.status_code)
        body = infer_image(
            1,
            parameters={
                "models_dir": str(canary),
                "model": outside,
                "path": "/etc/passwd",
                "version": "../1",
            },
        )
        body["model_name"] = outside
        response = http.post("/v2/models/digits-cnn/infer", json=body)
        assert response.status_code == 200
        assert response.json()["model_name"] == "digits-cnn"
        for field in ("version", "model", "path", "models_dir"):
            task = {"images": infer_image(1)["inputs"][0]["data"], field: outside}
            response = http.post("/v1/models/digits-cnn/classify", json=task)
            assert response.status_code in (200, 400, 404), (field, response.text)
            if response.status_code == 200:
                assert response.json()["model"] == "digits-cnn"
        models = http.get("/v1/models").json()["models"]
        assert "canary" not in str(models) and str(canary) not in str(models)
