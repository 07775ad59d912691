"""The routing rule admin API (``routing_rules``): ``GET | PUT | DELETE
/v1/models/{model}/routing``. Each answers the model's rule as this gateway applies it
(or null), its versions' readiness, the effective weights (the rule's weights of
the ready versions; with no rule, or none of its versions ready, the default version
at 100) and ``shadow``: the rule's shadow version with this gateway's figures of it
(``services.gateway.shadow``).

A PUT is validated against the model's known versions (400 naming the field), stored
in Redis, and applied by this gateway at once; the others apply it at their next
registry refresh. Who may call it: ``middleware/auth`` (``AXON_ADMIN_KEYS``).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from services.gateway.registry import Registry
from services.gateway.responses import JSON
from services.gateway.routing import DirectRoute
from services.gateway.routing_rules import RoutingRule, effective_weights, parse_rule
from services.gateway.shadow import Shadows
from services.gateway.state import gateway, read_json, tag
from services.gateway.transport import queue_errors_as_503


def describe(
    registry: Registry, model: str, rule: RoutingRule | None, shadows: Shadows | None = None
) -> dict[str, Any]:
    """The admin API's answer for ``model`` under ``rule`` (see the module docstring)."""
    versions = registry.models()[model]
    ready = {mv.version for mv in versions if mv.ready}
    weights = effective_weights(rule, ready) if rule is not None else ()
    source = "rule" if weights else ("no_ready_version" if rule is not None else "default")
    if not weights:
        default = registry.lookup(model)
        weights = ((default.version, 100),) if default.ready else ()
    total = sum(w for _, w in weights)
    return {
        "model": model,
        "rule": rule.as_dict() if rule is not None else None,
        "versions": [
            {"version": mv.version, "ready": mv.ready, "workers": len(mv.workers)}
            for mv in versions
        ],
        "effective": source,
        "effective_weights": {str(v): w for v, w in weights},
        "effective_percent": {str(v): round(100 * w / total, 2) for v, w in weights},
        "shadow": shadow_view(model, rule, ready, shadows),
    }


def shadow_view(
    model: str, rule: RoutingRule | None, ready: set[int], shadows: Shadows | None
) -> dict[str, Any] | None:
    """The rule's shadow and what this gateway process saw of it (``Shadows.stats``:
    counts by outcome, agreement, latency of both); None without a shadow and with no
    figures. Figures are per process: a gateway's own copies (sum them over gateways
    with the ``axon_shadow_*`` metrics)."""
    stats = shadows.stats(model) if shadows is not None else None
    shadow = rule.shadow if rule is not None else None
    if shadow is None and stats is None:
        return None
    doc: dict[str, Any] = {"version": None, "fraction": None, "ready": None}
    if shadow is not None:
        doc = {"version": shadow.version, "fraction": shadow.fraction,
               "ready": shadow.version in ready}  # fmt: skip
    doc["stats"] = stats
    return doc


async def get_routing(request: Request) -> Response:
    """What this gateway applies now: its registry's rule (the last refresh, or its own
    last write), so polling it on each gateway shows when a change reached it."""
    state = gateway(request)
    tag(request, "routing")
    model = request.path_params["model"]
    tag(request, "routing", state.registry.lookup(model))
    return JSON(describe(state.registry, model, state.registry.rule(model), state.shadows))


async def put_routing(request: Request) -> Response:
    state = gateway(request)
    tag(request, "routing")
    model = request.path_params["model"]
    tag(request, "routing", state.registry.lookup(model))  # 404 before reading the body
    doc = await read_json(request)
    known = {mv.version for mv in state.registry.models()[model]}
    rule = parse_rule(doc, known)
    async with queue_errors_as_503(state.transport.name, "refused to read or store the rule"):
        await state.transport.put_rule(model, rule.to_json())
    state.registry.set_rule(model, rule)
    return JSON(describe(state.registry, model, rule, state.shadows))


async def delete_routing(request: Request) -> Response:
    state = gateway(request)
    tag(request, "routing")
    model = request.path_params["model"]
    tag(request, "routing", state.registry.lookup(model))
    async with queue_errors_as_503(state.transport.name, "refused to read or store the rule"):
        await state.transport.delete_rule(model)
    state.registry.set_rule(model, None)
    return JSON(describe(state.registry, model, None, state.shadows))


routes = [
    DirectRoute("/v1/models/{model}/routing", get_routing, methods=["GET"]),
    DirectRoute("/v1/models/{model}/routing", put_routing, methods=["PUT"]),
    DirectRoute("/v1/models/{model}/routing", delete_routing, methods=["DELETE"]),
]
