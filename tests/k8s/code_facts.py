"""What the code reads and runs, found from the code itself so the deployment tests
follow it as it changes: the AXON_* names its settings objects look up, the direct
environment reads, and whether a container command names something that exists."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tests.k8s.manifests import ROOT

AXON_NAME = re.compile(r"AXON_[A-Z0-9_]+")


class RecordingEnv(Mapping[str, str]):
    """A mapping that remembers every key looked up in it."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self._values[key]

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.read.add(key)
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


REQUIRED = {"AXON_REDIS_URL": "redis://127.0.0.1:6379/0"}


def worker_names(family: str) -> set[str]:
    """Every AXON_* name a model service reads for ``family``: WorkerSettings.from_env
    and the logging settings (``logs.configure``)."""
    from services.contract.logs import log_settings
    from services.runtime.settings import WorkerSettings

    env = RecordingEnv(REQUIRED)
    WorkerSettings.from_env(env, family)
    log_settings(env)
    return {n for n in env.read if AXON_NAME.fullmatch(n)}


def gateway_names() -> set[str]:
    """Every AXON_* name the gateway reads: its settings object plus direct reads in
    services/gateway/ (access log) and the logging settings (``logs.log_settings``)."""
    from services.contract.logs import log_settings
    from services.gateway.settings import GatewaySettings

    env = RecordingEnv(REQUIRED)
    GatewaySettings.from_env(env)
    log_settings(env)
    return {n for n in env.read if AXON_NAME.fullmatch(n)} | direct_reads(
        ROOT / "services" / "gateway"
    )


def direct_reads(folder: Path) -> set[str]:
    """AXON_* names read with ``….get("AXON_X")``, ``getenv("AXON_X")`` or
    ``environ["AXON_X"]`` anywhere under ``folder``."""
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            key: ast.expr | None = None
            if isinstance(node, ast.Call) and node.args:
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called in ("get", "getenv", "pop"):
                    key = node.args[0]
            elif isinstance(node, ast.Subscript) and "environ" in ast.unparse(node.value):
                key = node.slice
            if (
                isinstance(key, ast.Constant)
                and isinstance(key.value, str)
                and AXON_NAME.fullmatch(key.value)
            ):
                names.add(key.value)
    return names


def service_class(target: str) -> Any:
    """The class a ``bentoml serve module:Class`` target names (imports the module;
    ``@bentoml.service`` wraps the class, ``.inner`` is the class itself)."""
    module, _, attr = target.partition(":")
    service = getattr(importlib.import_module(module), attr)
    return getattr(service, "inner", service)


def console_scripts() -> set[str]:
    return {ep.name for ep in importlib.metadata.entry_points(group="console_scripts")}


def module_runs(module: str) -> bool:
    """``python -m module`` works: a module, or a package with ``__main__``."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        return False
    if spec.submodule_search_locations is not None:
        return importlib.util.find_spec(f"{module}.__main__") is not None
    return True


def command_problems(argv: list[str]) -> list[str]:
    """Why ``argv`` would not start an Axon process (empty when it is a real command)."""
    if not argv:
        return ["empty command"]
    program, rest = argv[0], argv[1:]
    if program in ("python", "python3"):
        if rest[:1] != ["-m"] or len(rest) < 2:
            return [f"expected `python -m MODULE …`, got {argv}"]
        return _module_problems(rest[1], rest[2:])
    if program not in console_scripts():
        return [f"{program}: no such console script in this environment"]
    if program == "bentoml":
        if rest[:1] != ["serve"] or len(rest) < 2:
            return [f"expected `bentoml serve module:Class …`, got {argv}"]
        try:
            cls = service_class(rest[1])
        except (ImportError, AttributeError) as exc:
            return [f"bentoml serve {rest[1]}: {exc}"]
        if not hasattr(cls, "family"):
            return [f"{rest[1]} is not an Axon model service"]
        return []
    if program == "torchrun":
        if "-m" not in rest:
            return [f"torchrun without -m MODULE: {argv}"]
        at = rest.index("-m")
        return _module_problems(rest[at + 1], rest[at + 2 :])
    if program == "axon":
        return []
    return [f"{program}: not an Axon entry point"]


def cli_flags(module: str) -> set[str] | None:
    """The options ``python -m module`` declares with argparse's ``add_argument`` (read
    from its source, so nothing runs), or None when it declares none that way."""
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.submodule_search_locations is not None:
        spec = importlib.util.find_spec(f"{module}.__main__")
    if spec is None or spec.origin is None:
        return None
    tree = ast.parse(Path(spec.origin).read_text(), spec.origin)
    flags = {
        arg.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "add_argument"
        for arg in node.args
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
        and arg.value.startswith("-")
    }  # fmt: skip
    return flags or None


def _module_problems(module: str, args: list[str]) -> list[str]:
    if not module_runs(module):
        return [f"python -m {module}: no such module"]
    flags = cli_flags(module) if module != "training" else None
    if flags is not None:
        unknown = [a for a in args if a.startswith("-") and a.split("=")[0] not in flags]
        if unknown:
            return [f"python -m {module}: no option {unknown} (it has {sorted(flags)})"]
    if module == "training":
        from training.cli import _parser

        try:
            _parser().parse_args(args)
        except SystemExit:
            return [f"python -m training {' '.join(args)}: arguments refused"]
    return []
