"""``axon replay MODEL --version N [--limit K]``: replay a model's captured requests
(``AXON_CAPTURE_FRACTION`` on the gateway; ``services.contract.capture``) against
version N, compare each answer with the captured one and write a report, before any
user is sent to N.

    axon replay digits-cnn --version 2 --limit 500 --out reports/

The newest K captures (default 1,000), oldest first, are sent to version N's request
stream exactly as captured (the same encoded bodies: the same inputs and generator
seeds) through the gateway's own queue seam (``RedisTransport``, on ``--redis-url``,
default ``$AXON_REDIS_URL``), ``--concurrency`` at a time (default 1: the latency of
a request alone), each with ``--timeout-ms``. Version N needs a live worker; nothing
else needs a gateway. The comparison is the shadow's (``shadow_compare``), latency the
same span as the captured one (the queue round trip, no HTTP).

The report folder (``--out``, default ``replay-reports``) gets
``{model}-v{N}-{time}/report.json`` (``replay_report.summarize`` plus ``requests``: every
row),
``report.md`` (the figures for a person) and ``report.png`` (``replay_report.plot``).
Exit status 0 when a report was written, 1 when nothing could be replayed (no live
worker, no captures, Redis unreachable), 2 for bad options.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from services.contract.capture import Captured
from services.contract.codec import decode_reply
from services.contract.errors import BadEntryError, ErrorCode, SettingsError
from services.contract.protocol import NewEntry, Refused
from services.contract.resilience import cancel_and_wait
from services.gateway.settings import GatewaySettings
from services.gateway.shadow_compare import Incomparable, compare
from services.gateway.transport import TransportDown, TransportError
from services.gateway.transport_redis import RedisTransport
from services.replay_report import Row, plot, summarize

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model name, e.g. digits-cnn")
    parser.add_argument(
        "--version", type=_positive, required=True, help="the version to replay against"
    )
    parser.add_argument(
        "--limit", type=_positive, default=1000, help="newest captures to replay (default 1000)"
    )
    parser.add_argument(
        "--concurrency", type=_positive, default=1, help="requests in flight (default 1)"
    )
    parser.add_argument(
        "--timeout-ms", type=_positive, default=10_000, help="deadline per request (10000)"
    )
    parser.add_argument("--redis-url", help="the queue's Redis (default $AXON_REDIS_URL)")
    parser.add_argument(
        "--out", type=Path, default=Path("replay-reports"), help="report folder's parent"
    )


def run(
    options: argparse.Namespace, *, env: Mapping[str, str] | None = None, out: TextIO | None = None
) -> int:
    """Replay as ``options`` say (module docstring); the exit status."""
    out = out or sys.stdout
    env = os.environ if env is None else env
    url = options.redis_url or env.get("AXON_REDIS_URL", "")
    if not url:
        print("axon replay: --redis-url or AXON_REDIS_URL is required", file=sys.stderr)
        return 2
    instance = f"replay-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        settings = GatewaySettings.from_env(
            {"AXON_REDIS_URL": url, "AXON_GATEWAY_INSTANCE": instance,
             "AXON_REDIS_MODE": env.get("AXON_REDIS_MODE", "auto")}
        )  # fmt: skip
    except SettingsError as exc:
        print(f"axon replay: {exc}", file=sys.stderr)
        return 2
    try:
        folder = asyncio.run(_replay(options, settings, out))
    except _Refusal as exc:
        print(f"axon replay: {exc}", file=sys.stderr)
        return 1
    print(f"report: {folder}", file=out)
    return 0


class _Refusal(Exception):
    """Nothing could be replayed; ``str`` says why and what to do."""


async def _replay(options: argparse.Namespace, settings: GatewaySettings, out: TextIO) -> Path:
    transport = RedisTransport.connect(settings)
    receiving = asyncio.create_task(transport.receive(lambda: None), name="axon-replay-replies")
    try:
        return await _replay_on(transport, options, out)
    except (TransportDown, TransportError) as exc:
        raise _Refusal(f"{exc}") from None
    finally:
        # Cancelled again until it ends: redis-py may swallow a cancellation that lands
        # in a Redis call (as at the gateway's shutdown).
        await cancel_and_wait([receiving], log)
        await transport.aclose()


async def _replay_on(transport: RedisTransport, options: argparse.Namespace, out: TextIO) -> Path:
    model, version = options.model, options.version
    workers = [
        w for w in await transport.live_workers([]) if w.model == model and w.version == version
    ]
    if not workers:
        raise _Refusal(
            f"model {model!r} version {version} has no live worker; start one (for example "
            f"axon serve --versions latest:2) and run this again"
        )
    captures = await transport.read_captures(model, options.limit)
    if not captures:
        raise _Refusal(
            f"no captures of {model!r}: set AXON_CAPTURE_FRACTION (e.g. 0.05) on the gateway "
            "and let it serve traffic first"
        )
    partitions = min(w.partitions for w in workers)
    task = str(workers[0].metadata.get("task", captures[-1].task))
    gate = asyncio.Semaphore(options.concurrency)

    async def one(index: int, captured: Captured) -> Row:
        async with gate:
            return await _one(transport, model, version, index % partitions, captured, options)

    print(f"replaying {len(captures)} captures of {model} against version {version}", file=out)
    rows = list(await asyncio.gather(*(one(i, c) for i, c in enumerate(captures))))
    summary = summarize(model, version, task, rows)
    folder: Path = Path(options.out) / f"{model}-v{version}-{time.strftime('%Y%m%dT%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    report = {**summary, "requests": [row.as_dict() for row in rows]}
    (folder / "report.json").write_text(json.dumps(report, indent=2))
    (folder / "report.md").write_text(render(summary))
    plot(summary, rows, folder / "report.png")
    print(render(summary), file=out)
    return folder


async def _one(
    transport: RedisTransport,
    model: str,
    version: int,
    partition: int,
    captured: Captured,
    options: argparse.Namespace,
) -> Row:
    """Replay one capture; its row (never raises for the request's own failures)."""
    timeout_s = options.timeout_ms / 1000
    entry_id = f"replay-{secrets.token_hex(6)}:{captured.request_id}"
    base = Row(captured.request_id, captured.version, "", 0, None, None,
               captured.latency_us / 1000, None)  # fmt: skip

    def row(outcome: str, **changes: Any) -> Row:
        return Row(**{**base.as_dict(), "outcome": outcome, **changes})

    future = transport.replies.expect(entry_id)
    started = time.monotonic()
    entry = NewEntry(
        entry_id,
        transport.reply_to(model, version, partition),
        int(time.time() * 1000) + options.timeout_ms,
        captured.body,
        budget_ms=options.timeout_ms,
    )
    try:
        answer = await transport.submit(
            model, version, entry, limit=1_000_000, maxlen=1_000_000, byte_limit=2**40,
            partition=partition,
        )  # fmt: skip
        if isinstance(answer, Refused):
            return row("refused", detail=f"the stream is full ({answer})")
        reply = await asyncio.wait_for(future, timeout=timeout_s)
    except TimeoutError:
        return row("timeout", detail=f"no answer within {options.timeout_ms} ms")
    finally:
        transport.replies.forget(entry_id)
    elapsed_ms = (time.monotonic() - started) * 1000
    if not reply.ok:
        error = reply.error
        late = error is not None and error.code == ErrorCode.DEADLINE_EXCEEDED
        message = f"{error.code}: {error.message}" if error else "error"
        return row("timeout" if late else "error", replay_ms=elapsed_ms, detail=message[:200])
    try:
        primary = decode_reply(captured.reply)
        result = compare(captured.task, primary.outputs or {}, reply.outputs or {})
    except (Incomparable, BadEntryError) as exc:
        return row("incomparable", replay_ms=elapsed_ms, detail=str(exc)[:200])
    return row(
        "compared",
        rows=result.rows,
        agree=result.agree,
        difference=result.difference,
        replay_ms=elapsed_ms,
    )


def render(summary: Mapping[str, Any]) -> str:
    """The report's figures as Markdown, for a person."""
    lines = [
        f"# axon replay: {summary['model']} version {summary['version']} ({summary['task']})",
        "",
        f"- captures replayed: {summary['captures']} (served by versions "
        f"{', '.join(f'{v}: {n}' for v, n in summary['captured_versions'].items())})",
        "- outcomes: " + ", ".join(f"{k} {v}" for k, v in summary["outcomes"].items()),
        f"- compared: {summary['compared']} requests, {summary['rows']} rows",
    ]
    if summary["top1_agreement"] is not None:
        lines.append(f"- top-1 agreement: {100 * summary['top1_agreement']:.2f} %")
    if summary["mean_difference"] is not None:
        lines.append(
            f"- difference per request: mean {summary['mean_difference']:.6g}, "
            f"max {summary['max_difference']:.6g}"
        )
    lines += ["", "| latency (ms) | p50 | p95 | p99 | mean | count |", "|---|---|---|---|---|---|"]
    for name in ("captured", "replay"):
        figures = summary["latency_ms"][name]
        if figures:
            lines.append(
                f"| {name} | {figures['p50']:.2f} | {figures['p95']:.2f} | "
                f"{figures['p99']:.2f} | {figures['mean']:.2f} | {figures['count']} |"
            )
    return "\n".join(lines) + "\n"


def _positive(raw: str) -> int:
    if not raw.strip().isdigit() or int(raw) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {raw!r}")
    return int(raw)
