"""The package boundaries of docs/architecture.md, checked on the source (AST, no
imports): the gateway never imports worker code, the contract package imports neither
side, the client imports only itself (relatively) besides numpy and httpx, serving
never imports torch, training never imports services."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

ALLOWED: dict[str, tuple[str, ...]] = {
    # package → the first-party packages its modules may import
    "services/client": ("services.client",),
    "services/contract": ("services.contract",),
    "services/gateway": ("services.contract", "services.gateway"),
    "services/runtime": ("services.contract", "services.runtime"),
    "training": ("training",),
}
FORBIDDEN_EVERYWHERE_IN_SERVICES = ("torch",)
CLIENT_THIRD_PARTY = ("httpx", "numpy")
"""All the client may need besides the standard library: users can vendor it."""


def imported_modules(path: Path, package: str) -> set[str]:
    """Absolute module names ``path`` imports, relative imports resolved as if it lived
    in ``package`` (dotted)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            names.add(module)
            # ``from services.contract import protocol`` imports services.contract.protocol
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def crossings(path: Path, package: str, allowed: tuple[str, ...]) -> list[str]:
    """First-party imports of ``path`` outside ``allowed``."""
    return sorted(
        name
        for name in imported_modules(path, package)
        if name.split(".")[0] in ("services", "training")
        and name not in ("services", "training")
        and not any(name == a or name.startswith(a + ".") for a in allowed)
    )


def package_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_its_layer_allows(package: str) -> None:
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in crossings(path, package_of(path), ALLOWED[package])
    ]
    assert not wrong, "layer boundary crossed:\n" + "\n".join(wrong)


def test_services_never_import_torch() -> None:
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / "services").rglob("*.py"))
        for name in imported_modules(path, package_of(path))
        if name.split(".")[0] in FORBIDDEN_EVERYWHERE_IN_SERVICES
    ]
    assert not wrong, "\n".join(wrong)


def test_the_client_needs_only_numpy_and_httpx_and_imports_itself_relatively() -> None:
    """So that users can copy the folder into their project under any name."""
    wrong = []
    for path in sorted((ROOT / "services" / "client").rglob("*.py")):
        for name in imported_modules(path, package_of(path)):
            top = name.split(".")[0]
            if top not in (*sys.stdlib_module_names, *CLIENT_THIRD_PARTY, "services"):
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            absolute = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                absolute = [node.module or ""]
            wrong += [
                f"{path.relative_to(ROOT)} imports {name} by its absolute name"
                for name in absolute
                if name.split(".")[0] == "services"
            ]
    assert not wrong, "\n".join(wrong)


def test_the_check_catches_a_gateway_module_importing_the_worker(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from services.runtime.worker import Worker\n"
        "from ..runtime import batching\n"
        "from services.contract import codec\n"
        "from . import errors\n"
    )
    allowed = ALLOWED["services/gateway"]
    assert crossings(probe, "services.gateway", allowed) == [
        "services.runtime",
        "services.runtime.batching",
        "services.runtime.worker",
        "services.runtime.worker.Worker",
    ]
