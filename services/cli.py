"""The ``axon`` command: ``axon serve`` here; ``axon train | export | models`` are
handed to ``python -m training`` with ``os.execv`` (services never imports training
or torch)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

TRAINING_COMMANDS = ("train", "export", "models")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="axon",
        description="Axon: train, export and serve models. "
        "Training commands: axon train | export | models (see `axon train --help`).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve", help="start Redis, the model services and the gateway; restart what crashes"
    )
    serve.add_argument("--host", default="127.0.0.1", help="gateway host (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="gateway port (default 8000)")
    serve.add_argument(
        "--grpc-port",
        type=int,
        default=None,
        help="OIP gRPC port of the gateway (default $AXON_GRPC_PORT or 8001; 0 = none)",
    )
    serve.add_argument(
        "--models-dir",
        type=Path,
        default=Path(os.environ.get("AXON_MODELS_DIR") or "exported_models"),
        help="model repository (default $AXON_MODELS_DIR or exported_models)",
    )
    serve.add_argument("--log-dir", type=Path, help="where child logs go (default: a temp dir)")
    serve.add_argument(
        "--gateway-workers",
        type=int,
        default=None,
        metavar="N",
        help="gateway processes sharing --port and --grpc-port (SO_REUSEPORT; default "
        "$AXON_GATEWAY_WORKERS or 1): one Python process is one core's worth of gateway",
    )
    serve.add_argument(
        "--ready-timeout", type=float, default=180.0, help="seconds to wait for readiness"
    )
    serve.add_argument(
        "--replicas",
        type=_replicas,
        action="append",
        default=[],
        metavar="MODEL=N",
        help="run N workers of MODEL (model name or family) on its shared queue; repeatable",
    )
    serve.add_argument(
        "--versions",
        type=_versions,
        default=None,
        metavar="POLICY",
        help="model versions to run side by side: latest:N (the N highest), all, or 1,3 "
        "(default $AXON_VERSION_POLICY or latest:1); the repository is polled for changes",
    )
    serve.add_argument(
        "--versions-file",
        type=Path,
        default=None,
        metavar="FILE",
        help='per-model policies, a JSON object such as {"digits-cnn": "latest:2"} '
        "(overrides --versions for the models it names)",
    )
    serve.add_argument(
        "--nice",
        type=_nice,
        action="append",
        default=[],
        metavar="MODEL[:VERSION]=N",
        help="run the services of MODEL (or of one version of it) at niceness N (0-19, "
        "AXON_WORKER_NICE): a shadow or candidate version sharing the primary's CPUs "
        "then gets only the CPU time the primary leaves; repeatable",
    )
    for command in TRAINING_COMMANDS:
        sub.add_parser(command, help=f"training side: python -m training {command} …")
    from services import route_cli

    route_cli.add_arguments(
        sub.add_parser("route", help="show, set or clear a model's routing rule (canary weights)")
    )
    from services import replay_cli

    replay_cli.add_arguments(
        sub.add_parser(
            "replay", help="replay captured requests against a version and write a report"
        )
    )
    return parser


def _replicas(raw: str) -> tuple[str, int]:
    """``MODEL=N`` (N a positive integer) → ``(MODEL, N)``; argparse reports a bad value."""
    name, sep, count = raw.partition("=")
    if not sep or not name.strip() or not count.strip().isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"expected MODEL=N with N >= 1, got {raw!r}")
    return name.strip(), int(count)


def _nice(raw: str) -> tuple[str, int]:
    """``MODEL=N`` or ``MODEL:VERSION=N`` (N a niceness, 0-19) → ``(key, N)``."""
    key, sep, value = raw.partition("=")
    model, colon, version = key.strip().partition(":")
    good_version = not colon or (version.isdigit() and not version.startswith("0"))
    if not sep or not model or not good_version or not value.strip().isdigit():
        raise argparse.ArgumentTypeError(
            f"expected MODEL=N or MODEL:VERSION=N (e.g. digits-cnn:2=19), got {raw!r}"
        )
    if int(value) > 19:
        raise argparse.ArgumentTypeError(f"{raw!r}: N must be a niceness from 0 to 19")
    return key.strip(), int(value)


def _versions(raw: str) -> str:
    """A version policy (``services/runtime/versions.py``), checked; argparse reports a
    bad one as ``argument --versions: …``."""
    from services.runtime.versions import VersionPolicyError, parse_policy

    try:
        parse_policy(raw, "")
    except VersionPolicyError as exc:
        raise argparse.ArgumentTypeError(str(exc).strip()) from None
    return raw


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in TRAINING_COMMANDS:
        os.execv(sys.executable, [sys.executable, "-m", "training", *args])
    options = _parser().parse_args(args)
    if options.command == "route":
        from services.route_cli import run

        return run(options)
    if options.command == "replay":
        from services import replay_cli

        return replay_cli.run(options)
    from services.serve import serve

    return serve(
        host=options.host,
        port=options.port,
        models_dir=options.models_dir,
        log_dir=options.log_dir,
        ready_timeout_s=options.ready_timeout,
        replicas=dict(options.replicas),
        grpc_port=options.grpc_port,
        versions=options.versions,
        versions_file=options.versions_file,
        gateway_workers=options.gateway_workers,
        nice=dict(options.nice),
    )


if __name__ == "__main__":
    sys.exit(main())
