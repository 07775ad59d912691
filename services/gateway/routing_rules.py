"""Weighted routing (canary): a rule per model that spreads its unversioned requests over
its versions, e.g. ``{"weights": {"1": 90, "2": 10}, "sticky_header": "X-User-Id"}``.

The rule lives in Redis (``axon:route:{model}``, ``protocol.routing_key``) so that every
gateway applies the same one: each reads it with its registry refresh
(``AXON_REGISTRY_REFRESH_MS``). It is validated when written (``parse_rule`` with the
model's known versions: a 400 naming the field) and again when read (``decode_rule``:
a stored value that does not parse is ignored, as if there were no rule).

Choosing a version is a pure function of the rule, the versions' readiness and a point
in [0, 1) (``choose``): the point is the request's sticky hash (``sticky_point``: the
same header value → the same version while the weights and readiness do not change) or
a draw from the gateway's injected random source. Weights of versions with no live
worker are skipped and the rest renormalised; when no weighted version is ready the
rule does not apply (the default: the highest ready version), so a rule never causes a
503 by itself. Versioned requests never consult the rule.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.contract.metadata import VERSION
from services.gateway.errors import BadRequestError

FIELDS = ("weights", "sticky_header", "shadow")
SHADOW_FIELDS = ("version", "fraction")

MAX_WEIGHT = 1_000_000
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")
"""An HTTP header name (RFC 9110 token), at most 100 characters."""

REASON_WEIGHTS, REASON_STICKY, REASON_NONE_READY = "weights", "sticky", "no_ready_version"
"""``reason`` label of ``axon_routed_total``: drawn at random, picked by the sticky
header's hash, or the rule's versions were all without a live worker (default used)."""


@dataclass(frozen=True)
class ShadowRule:
    """Copy ``fraction`` (in (0, 1]) of the rule's requests to ``version``."""

    version: int
    fraction: float

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "fraction": self.fraction}


@dataclass(frozen=True)
class RoutingRule:
    """A model's rule: ``weights`` as (version, weight) pairs by version ascending, and
    an optional ``shadow``."""

    weights: tuple[tuple[int, int], ...]
    sticky_header: str | None = None
    shadow: ShadowRule | None = None

    def as_dict(self) -> dict[str, Any]:
        """The rule as JSON; ``shadow`` only when there is one (a rule written before
        shadows existed reads back unchanged)."""
        doc: dict[str, Any] = {
            "weights": {str(version): weight for version, weight in self.weights},
            "sticky_header": self.sticky_header,
        }
        if self.shadow is not None:
            doc["shadow"] = self.shadow.as_dict()
        return doc

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), separators=(",", ":"))


def parse_rule(doc: Any, known_versions: Collection[int] | None = None) -> RoutingRule:
    """A rule from a PUT body (or a stored document); ``BadRequestError`` naming the
    field. ``known_versions``: the model's versions (every weighted one must be one of
    them); None skips that check (reading a stored rule: a version may come later)."""
    if not isinstance(doc, Mapping):
        raise BadRequestError('body: expected a JSON object such as {"weights": {"1": 90}}')
    for name in doc:
        if name not in FIELDS:
            raise BadRequestError(f"{str(name)[:40]}: unknown field (expected {', '.join(FIELDS)})")
    weights = doc.get("weights")
    if not isinstance(weights, Mapping) or not weights:
        raise BadRequestError('weights: required, an object of version → weight such as {"1": 90}')
    pairs: list[tuple[int, int]] = []
    for key, weight in weights.items():
        text = str(key)
        if not VERSION.match(text):
            raise BadRequestError(f"weights.{text[:20]}: a version must be a positive integer")
        version = int(text)
        if known_versions is not None and version not in known_versions:
            raise BadRequestError(
                f"weights.{text}: no such version (versions: {sorted(known_versions)})"
            )
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
            raise BadRequestError(f"weights.{text}: must be an integer >= 0, got {weight!r}")
        if weight > MAX_WEIGHT:
            raise BadRequestError(f"weights.{text}: at most {MAX_WEIGHT}, got {weight}")
        pairs.append((version, weight))
    if sum(weight for _, weight in pairs) <= 0:
        raise BadRequestError("weights: must sum to more than 0")
    sticky = doc.get("sticky_header")
    if sticky is not None and (not isinstance(sticky, str) or not HEADER_NAME.match(sticky)):
        raise BadRequestError(
            f"sticky_header: must be null or an HTTP header name such as X-User-Id, got {sticky!r}"
        )
    return RoutingRule(
        tuple(sorted(pairs)), sticky, parse_shadow(doc.get("shadow"), known_versions)
    )


def parse_shadow(doc: Any, known_versions: Collection[int] | None) -> ShadowRule | None:
    """The rule's ``shadow`` field: null, or ``{"version": N, "fraction": F}`` with N a
    known version and 0 < F <= 1; ``BadRequestError`` naming the field."""
    if doc is None:
        return None
    if not isinstance(doc, Mapping):
        raise BadRequestError(
            'shadow: must be null or an object such as {"version": 2, "fraction": 0.1}'
        )
    for name in doc:
        if name not in SHADOW_FIELDS:
            raise BadRequestError(
                f"shadow.{str(name)[:40]}: unknown field (expected {', '.join(SHADOW_FIELDS)})"
            )
    version = doc.get("version")
    text = str(version)
    if isinstance(version, bool) or not isinstance(version, int | str) or not VERSION.match(text):
        raise BadRequestError(f"shadow.version: required, a positive integer, got {version!r}")
    if known_versions is not None and int(text) not in known_versions:
        raise BadRequestError(
            f"shadow.version: no such version {text} (versions: {sorted(known_versions)})"
        )
    fraction = doc.get("fraction", 1.0)
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, int | float)
        or not 0.0 < fraction <= 1.0  # NaN fails both comparisons
    ):
        raise BadRequestError(f"shadow.fraction: must be a number in (0, 1], got {fraction!r}")
    return ShadowRule(int(text), float(fraction))


def decode_rule(raw: str) -> RoutingRule:
    """A stored rule; ``ValueError`` when it is not valid JSON or not a valid rule."""
    try:
        return parse_rule(json.loads(raw))
    except (BadRequestError, RecursionError) as exc:
        raise ValueError(str(exc)) from None


def effective_weights(rule: RoutingRule, ready: Collection[int]) -> tuple[tuple[int, int], ...]:
    """The rule's positive weights of the ``ready`` versions (the others are skipped,
    which renormalises the rest); empty when none is ready."""
    return tuple((v, w) for v, w in rule.weights if w > 0 and v in ready)


def pick(weights: Sequence[tuple[int, int]], point: float) -> int:
    """The version whose share of the cumulative ``weights`` (positive, not empty)
    holds ``point`` in [0, 1): with ``((1, 90), (2, 10))``, points below 0.9 → 1."""
    bounds: list[int] = []
    total = 0
    for _, weight in weights:
        total += weight
        bounds.append(total)
    index = bisect.bisect_right(bounds, point * total)
    return weights[min(index, len(weights) - 1)][0]


def sticky_point(value: str) -> float:
    """A stable point in [0, 1) for a header value (BLAKE2b, the same in every process
    and release; Python's ``hash`` is salted per process)."""
    digest = hashlib.blake2b(value.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def choose(
    rule: RoutingRule, ready: Collection[int], *, sticky_value: str | None, draw: float
) -> tuple[int | None, str]:
    """The version ``rule`` sends a request to and why (``REASON_*``): by the sticky
    value's hash when there is one, else by ``draw`` (in [0, 1)); ``(None,
    REASON_NONE_READY)`` when no weighted version is ready (use the default)."""
    weights = effective_weights(rule, ready)
    if not weights:
        return None, REASON_NONE_READY
    if sticky_value is not None:
        return pick(weights, sticky_point(sticky_value)), REASON_STICKY
    return pick(weights, draw), REASON_WEIGHTS
