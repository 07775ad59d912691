"""``axon route`` (``services/route_cli.py``) against the in-process gateway: set, show
and clear a rule, its key from the options or the environment, refusals printed."""

from __future__ import annotations

import io
import time
from pathlib import Path

import httpx
import pytest

from services.cli import _parser
from services.route_cli import run
from tests.support.inprocess import CLASSIFIER, stack

ADMIN, API = "admin-key-0001", "api-key-00001"


def route(gw_client: object, *argv: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    out = io.StringIO()
    options = _parser().parse_args(["route", CLASSIFIER, *argv])
    code = run(options, env=env or {}, client=gw_client, out=out)  # type: ignore[arg-type]
    return code, out.getvalue()


def test_set_show_and_clear_a_rule(tmp_path: Path) -> None:
    with stack(tmp_path, classifier_versions=2) as gw:
        gw.serve(CLASSIFIER, 1)
        code, printed = route(gw.client, "1=90", "2=10", "--sticky-header", "X-User-Id")
        assert code == 0
        assert printed.splitlines() == [
            f"{CLASSIFIER}: rule 1=90 2=10 (sticky header X-User-Id)",
            "  version   1:    100 %  ready (1 workers)",
            "  version   2:        -  no live worker",
        ]
        assert gw.client.get(f"/v1/models/{CLASSIFIER}/routing").json()["rule"] == {
            "weights": {"1": 90, "2": 10},
            "sticky_header": "X-User-Id",
        }
        gw.serve(CLASSIFIER, 2)
        code, printed = route(gw.client)
        assert code == 0 and "version   2:     10 %  ready (1 workers)" in printed
        code, printed = route(gw.client, "--clear")
        assert code == 0
        assert printed.splitlines()[0] == (
            f"{CLASSIFIER}: no routing rule (the highest ready version answers)"
        )
        assert "version   2:    100 %" in printed


def test_the_key_comes_from_the_option_or_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"AXON_API_KEYS": API, "AXON_ADMIN_KEYS": ADMIN}
    with stack(tmp_path, env, classifier_versions=2) as gw:
        assert route(gw.client, "1=1")[0] == 1
        assert "401 missing or invalid admin key" in capsys.readouterr().err
        assert route(gw.client, "1=1", env={"AXON_API_KEYS": API})[0] == 1
        assert "403 changing a routing rule needs an admin key" in capsys.readouterr().err
        assert route(gw.client, "1=1", env={"AXON_ADMIN_KEYS": f"{ADMIN},other-key-123"})[0] == 0
        assert route(gw.client, "2=1", "--admin-key", ADMIN)[0] == 0
        assert route(gw.client, "1=1", "2=0", "--admin-key", API)[0] == 1
        capsys.readouterr()
        assert route(gw.client, "9=1", "--admin-key", ADMIN)[0] == 1
        assert "400 weights.9: no such version" in capsys.readouterr().err


def test_contradictory_options_and_bad_weights(capsys: pytest.CaptureFixture[str]) -> None:
    assert route(None, "1=1", "--clear")[0] == 2
    assert route(None, "--sticky-header", "X-User")[0] == 2
    with pytest.raises(SystemExit):
        _parser().parse_args(["route", CLASSIFIER, "1:90"])
    assert "expected VERSION=WEIGHT such as 1=90" in capsys.readouterr().err


def test_an_unreachable_gateway_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with httpx.Client(base_url="http://gw.invalid", transport=httpx.MockTransport(refuse)) as http:
        assert route(http)[0] == 1
    assert "cannot reach http://127.0.0.1:8000: connection refused" in capsys.readouterr().err


def test_a_shadow_is_set_and_its_figures_shown(tmp_path: Path) -> None:
    with stack(tmp_path, classifier_versions=2) as gw:
        gw.serve(CLASSIFIER, 1)
        gw.serve(CLASSIFIER, 2)
        code, printed = route(gw.client, "1=100", "--shadow", "2:0.5")
        assert code == 0, printed
        assert "  shadow: version 2, 50 % of requests copied" in printed.splitlines()
        assert gw.client.get(f"/v1/models/{CLASSIFIER}/routing").json()["rule"]["shadow"] == {
            "version": 2,
            "fraction": 0.5,
        }
        assert route(gw.client, "1=100", "--shadow", "2")[0] == 0
        image = {"images": [[[[1.0, 2.0], [3.0, 4.0]]]]}
        for _ in range(3):
            assert (
                gw.client.post(f"/v1/models/{CLASSIFIER}/classify", json=image).status_code == 200
            )
        until = time.monotonic() + 30
        while "compared=3" not in (printed := route(gw.client)[1]):
            assert time.monotonic() < until, printed
            time.sleep(0.02)
        assert "    top-1 agreement 100.00 %" in printed.splitlines()
        assert any(line.startswith("    shadow latency p50") for line in printed.splitlines())


def test_bad_shadow_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert route(None, "--shadow", "2")[0] == 2
    assert "--shadow need weights" in capsys.readouterr().err
    assert route(None, "--clear", "--shadow", "2")[0] == 2
    for bad in ("0", "2:0", "2:1.5", "x", "2:y"):
        with pytest.raises(SystemExit):
            _parser().parse_args(["route", CLASSIFIER, "1=1", "--shadow", bad])
        assert "expected VERSION[:FRACTION]" in capsys.readouterr().err
