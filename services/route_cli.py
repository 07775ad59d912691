"""``axon route``: show, set or clear a model's routing rule (canary weights) through a
gateway's admin API (``GET | PUT | DELETE /v1/models/{model}/routing``), then print the
rule in effect.

    axon route digits-cnn                      # show
    axon route digits-cnn 1=90 2=10            # 90 % to version 1, 10 % to version 2
    axon route digits-cnn 1=50 2=50 --sticky-header X-User-Id
    axon route digits-cnn 1=100 --shadow 2:0.25  # a copy of 25 % of requests to version 2
    axon route digits-cnn --clear              # back to the highest ready version

The key is ``--admin-key``, else the first of ``AXON_ADMIN_KEYS``, else the first of
``AXON_API_KEYS`` (a gateway without admin keys takes an API key), sent as
``Authorization: Bearer``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import httpx


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model name, e.g. digits-cnn")
    parser.add_argument(
        "weights",
        nargs="*",
        type=_weight,
        metavar="VERSION=WEIGHT",
        help="weights of versions (integers >= 0), e.g. 1=90 2=10; none: show the rule",
    )
    parser.add_argument(
        "--sticky-header",
        metavar="HEADER",
        help="requests with this header keep to one version (a hash of its value)",
    )
    parser.add_argument(
        "--shadow",
        type=_shadow,
        metavar="VERSION[:FRACTION]",
        help="copy FRACTION (0 < F <= 1, default 1) of the requests to VERSION; its "
        "answers are compared, never sent to clients",
    )
    parser.add_argument("--clear", action="store_true", help="remove the rule")
    parser.add_argument(
        "--url",
        default="http://127.0.0.1:8000",
        help="gateway URL (default http://127.0.0.1:8000)",
    )
    parser.add_argument(
        "--admin-key",
        help="key to send (default: first of $AXON_ADMIN_KEYS, else of $AXON_API_KEYS)",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")


def run(
    options: argparse.Namespace,
    *,
    env: Mapping[str, str] | None = None,
    client: httpx.Client | None = None,
    out: TextIO | None = None,
) -> int:
    """Call the admin API as ``options`` say and print the rule; 0 on success, 1 when
    the gateway refused or could not be reached, 2 for contradictory options."""
    out = out or sys.stdout
    shadow = getattr(options, "shadow", None)
    if options.clear and (options.weights or options.sticky_header or shadow):
        print("axon route: --clear takes no weights, --sticky-header or --shadow", file=sys.stderr)
        return 2
    if (options.sticky_header or shadow) and not options.weights:
        print(
            "axon route: --sticky-header and --shadow need weights (VERSION=WEIGHT ...)",
            file=sys.stderr,
        )
        return 2
    path = f"/v1/models/{options.model}/routing"
    headers = _auth(options.admin_key, os.environ if env is None else env)
    if options.clear:
        method, body = "DELETE", None
    elif options.weights:
        body = {"weights": dict(options.weights), "sticky_header": options.sticky_header}
        if shadow is not None:
            body["shadow"] = {"version": shadow[0], "fraction": shadow[1]}
        method = "PUT"
    else:
        method, body = "GET", None
    own = client is None
    http = client or httpx.Client(base_url=options.url.rstrip("/"), timeout=options.timeout)
    try:
        response = http.request(method, path, json=body, headers=headers)
    except httpx.HTTPError as exc:
        print(f"axon route: cannot reach {options.url}: {exc}", file=sys.stderr)
        return 1
    finally:
        if own:
            http.close()
    if response.status_code != 200:
        print(f"axon route: {response.status_code} {_error(response)}", file=sys.stderr)
        return 1
    print(render(response.json()), file=out)
    return 0


def render(described: Mapping[str, Any]) -> str:
    """The admin API's answer as a few lines for a person."""
    rule = described.get("rule")
    if rule is None:
        head = f"{described['model']}: no routing rule (the highest ready version answers)"
    else:
        weights = " ".join(f"{v}={w}" for v, w in rule["weights"].items())
        sticky = rule.get("sticky_header")
        head = f"{described['model']}: rule {weights}" + (
            f" (sticky header {sticky})" if sticky else ""
        )
        if described.get("effective") == "no_ready_version":
            head += "; none of its versions has a live worker: the default answers"
    percent = described.get("effective_percent", {})
    lines = [head]
    for version in described.get("versions", []):
        name = str(version["version"])
        state = f"ready ({version['workers']} workers)" if version["ready"] else "no live worker"
        share = f"{percent[name]:g} %" if name in percent else "-"
        lines.append(f"  version {name:>3}: {share:>8}  {state}")
    lines.extend(_shadow_lines(described.get("shadow")))
    return "\n".join(lines)


def _shadow_lines(shadow: Mapping[str, Any] | None) -> list[str]:
    """The shadow and this gateway's figures of it, for a person."""
    if not shadow:
        return []
    lines = []
    if shadow.get("version") is not None:
        ready = "" if shadow.get("ready") else " (no live worker: nothing is copied)"
        lines.append(
            f"  shadow: version {shadow['version']}, {100 * shadow['fraction']:g} % of "
            f"requests copied{ready}"
        )
    stats = shadow.get("stats")
    if stats:
        counts = " ".join(f"{k}={v}" for k, v in stats["outcomes"].items() if v)
        lines.append(f"  shadow figures (this gateway): {counts or 'none yet'}")
        if stats.get("top1_agreement") is not None:
            lines.append(f"    top-1 agreement {100 * stats['top1_agreement']:.2f} %")
        if stats.get("mean_difference") is not None:
            lines.append(f"    mean difference {stats['mean_difference']:.6g}")
        for role in ("primary", "shadow"):
            latency = stats["latency_ms"].get(role)
            if latency:
                lines.append(
                    f"    {role} latency p50 {latency['p50']:.2f} ms, p95 {latency['p95']:.2f} ms"
                )
    return lines


def _shadow(raw: str) -> tuple[int, float]:
    version, _, fraction = raw.partition(":")
    try:
        number, share = int(version), float(fraction) if fraction else 1.0
    except ValueError:
        number, share = 0, 0.0
    if number < 1 or not 0.0 < share <= 1.0:
        raise argparse.ArgumentTypeError(
            f"expected VERSION[:FRACTION] such as 2 or 2:0.25 (0 < FRACTION <= 1), got {raw!r}"
        )
    return number, share


def _weight(raw: str) -> tuple[str, int]:
    version, sep, weight = raw.partition("=")
    if not sep or not version.strip().isdigit() or not weight.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected VERSION=WEIGHT such as 1=90, got {raw!r}")
    return version.strip(), int(weight)


def _auth(explicit: str | None, env: Mapping[str, str]) -> dict[str, str]:
    key = explicit
    for name in ("AXON_ADMIN_KEYS", "AXON_API_KEYS"):
        if not key:
            key = next((k.strip() for k in env.get(name, "").split(",") if k.strip()), None)
    return {"Authorization": f"Bearer {key}"} if key else {}


def _error(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]
