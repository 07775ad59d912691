"""Which versions of a model ``axon serve`` runs: a version policy (Triton's vocabulary),
the selection it makes from the versions present, and the change between what runs and
what should run. Pure: no file, process or clock here (``services/serve.py`` does that).

Policies (``--versions``, ``AXON_VERSION_POLICY``, or per model in ``--versions-file``):

- ``latest:N``: the ``N`` highest versions present (``latest:1``, the default, is the
  highest one; ``latest`` alone means ``latest:1``);
- ``all``: every version present;
- ``1,3``: those versions, as far as they are present.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from services.contract.metadata import MODEL_NAME, VERSION

DEFAULT_POLICY = "latest:1"

Key = tuple[str, int]
"""``(model, version)``: one model version that runs (with all its replicas)."""


class VersionPolicyError(ValueError):
    """A version policy that does not parse; the message names where it came from."""


@dataclass(frozen=True)
class VersionPolicy:
    """``latest`` (the ``count`` highest), ``all``, or ``specific`` (``versions``)."""

    kind: Literal["latest", "all", "specific"]
    count: int = 1
    versions: frozenset[int] = frozenset()

    def select(self, present: Iterable[int]) -> list[int]:
        """The versions of ``present`` this policy runs, ascending."""
        versions = sorted(set(present))
        if self.kind == "all":
            return versions
        if self.kind == "latest":
            return versions[-self.count :]
        return [v for v in versions if v in self.versions]

    @property
    def single(self) -> bool:
        """Whether it can never select more than one version."""
        return (self.kind == "latest" and self.count == 1) or (
            self.kind == "specific" and len(self.versions) == 1
        )

    def __str__(self) -> str:
        if self.kind == "all":
            return "all"
        if self.kind == "latest":
            return f"latest:{self.count}"
        return ",".join(str(v) for v in sorted(self.versions))


def parse_policy(raw: str, where: str) -> VersionPolicy:
    """``latest:N`` | ``latest`` | ``all`` | ``V[,V…]`` → a policy. ``where`` names the
    option or file the value came from; it starts the message of ``VersionPolicyError``."""
    text = raw.strip().lower()
    expected = "expected latest:N (N >= 1), all, or version numbers such as 1,3"
    if text == "all":
        return VersionPolicy("all")
    if text == "latest" or text.startswith("latest:"):
        count = "1" if text == "latest" else text.partition(":")[2]
        if not VERSION.match(count):
            raise VersionPolicyError(f"{where} {raw!r}: N must be a positive integer; {expected}")
        return VersionPolicy("latest", count=int(count))
    parts = [part.strip() for part in text.split(",")]
    if not text or not all(VERSION.match(part) for part in parts):
        raise VersionPolicyError(f"{where} {raw!r}: {expected}")
    return VersionPolicy("specific", versions=frozenset(int(part) for part in parts))


def parse_policy_file(text: str, where: str) -> dict[str, VersionPolicy]:
    """A versions file: a JSON object, model name → policy string, e.g.
    ``{"digits-cnn": "latest:2", "sunspots-lstm": "1,3"}``."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise VersionPolicyError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise VersionPolicyError(f"{where}: expected a JSON object, model name → policy")
    policies = {}
    for model, raw in document.items():
        if not MODEL_NAME.match(model):
            raise VersionPolicyError(f"{where}: {model!r} is not a model name")
        if not isinstance(raw, str):
            raise VersionPolicyError(f'{where}: {model}: expected a string such as "latest:2"')
        policies[model] = parse_policy(raw, f"{where}: {model}:")
    return policies


def policy_for(
    model: str,
    per_model: Mapping[str, VersionPolicy],
    option: str | None,
    env: Mapping[str, str],
) -> VersionPolicy:
    """The versions file's entry for ``model``, else ``--versions``, else
    ``AXON_VERSION_POLICY``, else ``latest:1``."""
    if model in per_model:
        return per_model[model]
    if option is not None:
        return parse_policy(option, "--versions")
    raw = env.get("AXON_VERSION_POLICY", "").strip()
    return parse_policy(raw, "AXON_VERSION_POLICY") if raw else parse_policy(DEFAULT_POLICY, "")


@dataclass(frozen=True)
class Changes:
    """What to do to go from the running versions to the wanted ones.

    ``start``: wanted, not running. ``stop``: running, not wanted, and nothing of the
    same model is still coming up: stop now. ``hold``: running, not wanted, but another
    version of the same model is starting or not ready yet: stopped once it is ready
    (make before break: the model keeps a ready version throughout a roll-over).
    """

    start: tuple[Key, ...] = ()
    stop: tuple[Key, ...] = ()
    hold: tuple[Key, ...] = ()


def diff(running: Mapping[Key, bool], wanted: Iterable[Key]) -> Changes:
    """``running``: each running model version → whether it is ready; ``wanted``: what
    the policies select now. Every list comes sorted."""
    wanted_set = set(wanted)
    start = sorted(wanted_set - running.keys())
    coming = {model for model, version in wanted_set if not running.get((model, version))}
    leaving = sorted(running.keys() - wanted_set)
    return Changes(
        start=tuple(start),
        stop=tuple(key for key in leaving if key[0] not in coming),
        hold=tuple(key for key in leaving if key[0] in coming),
    )
