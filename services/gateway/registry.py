"""What the gateway knows about models: live workers (the transport's registry view of
their heartbeats) and the metadata they publish, refreshed by one background task; plus
models seen earlier or found in the local model repository, so a model whose workers
are all gone answers 503 (known, not ready) instead of 404 (unknown), or, for a version
the ``HoldPolicy`` holds (``AXON_HOLD_WITHOUT_WORKERS``), takes requests that wait for a
worker to start (scale from zero). The same refresh reads the models' routing rules
(``routing_rules``): ``route`` applies them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.contract.errors import ModelRepositoryError
from services.contract.metadata import MODEL_NAME, VERSION, ModelMetadata, parse_metadata
from services.contract.protocol import WorkerInfo
from services.contract.resilience import FailureLog
from services.gateway.errors import NotFoundError, UnavailableError
from services.gateway.hold import NO_HOLD, HoldPolicy
from services.gateway.routing_rules import RoutingRule, choose, decode_rule, effective_weights
from services.gateway.transport import Transport, TransportDown, TransportError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelVersion:
    """One model version: its metadata and the live workers serving it (maybe none)."""

    metadata: ModelMetadata
    workers: tuple[WorkerInfo, ...] = ()
    partitions: int = 1
    """Stream partitions requests are spread over: as many as every live worker reads
    (``WorkerInfo.partitions``); 1 without workers (partition 0 is always read)."""

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def version(self) -> int:
        return self.metadata.version

    @property
    def ready(self) -> bool:
        return bool(self.workers)


@dataclass(frozen=True)
class IndexEntry:
    """One model version of the repository index (OIP model repository extension)."""

    name: str
    version: str
    state: str
    """``READY`` (a live worker serves it and the queue answers) or ``UNAVAILABLE``."""
    reason: str
    """Why it is not ready ("" when it is)."""

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "state": self.state,
                "reason": self.reason}  # fmt: skip


class Registry:
    """A snapshot of model versions, refreshed every ``refresh_ms`` by ``run``."""

    def __init__(
        self,
        transport: Transport,
        *,
        refresh_ms: int,
        no_worker_wait_ms: int = 0,
        hold: HoldPolicy = NO_HOLD,
        clock: Callable[[], float] = time.monotonic,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self._transport = transport
        self._draw = draw
        """Points in [0, 1) for weighted routing (injected: tests pass a seeded one)."""
        self._rules: dict[str, RoutingRule] = {}
        self._rule_writes = 0
        """Counts ``set_rule`` calls: a refresh that read Redis before this gateway's own
        write must not put the older rule back."""
        self._refresh_s = refresh_ms / 1000
        self._no_worker_wait_ms = no_worker_wait_ms
        self._hold = hold
        self._clock = clock
        self._last_seen: dict[tuple[str, int], float] = {}
        self._warned: set[str] = set()
        self._known: dict[tuple[str, int], ModelMetadata] = {}
        self._models: dict[str, list[ModelVersion]] = {}
        self.reachable = False
        """The queue answered the last refresh (and nothing saw it fail since)."""
        self.refreshed = asyncio.Event()

    def add_repository(self, root: Path) -> None:
        """Know every valid ``{model}/{version}/metadata.json`` under ``root`` (no ONNX read)."""
        if not root.is_dir():
            log.warning("AXON_MODELS_DIR %s is not a folder; only live workers are known", root)
            return
        for path in sorted(root.glob("*/*/metadata.json")):
            if not (MODEL_NAME.match(path.parent.parent.name) and VERSION.match(path.parent.name)):
                continue
            try:
                metadata = parse_metadata(json.loads(path.read_text(encoding="utf-8")), path)
            except (OSError, ValueError, ModelRepositoryError) as exc:
                log.warning("ignoring %s: %s", path, exc)
                continue
            self._known[(metadata.name, metadata.version)] = metadata
        for model, version in sorted(self._hold.versions - set(self._known)):
            log.warning(
                "AXON_HOLD_WITHOUT_WORKERS names %s:%d, which the model repository %s lacks: "
                "its requests get 404 until a worker has served it",
                model, version, root,
            )  # fmt: skip
        self._rebuild([])

    async def refresh(self) -> None:
        """Read live workers and routing rules from the transport and rebuild the
        snapshot. A heartbeat that does not parse, or whose metadata is invalid, is
        skipped (logged once per key); rules that cannot be read (an error reply) stay
        as they were; ``reachable`` from then on. Raises ``TransportDown`` /
        ``TransportError`` (reading the workers)."""
        malformed: list[str] = []
        workers = await self._transport.live_workers(malformed)
        for key_name in malformed:
            self._warn_once(key_name, "heartbeat is not a valid worker heartbeat")
        usable = []
        for info in workers:
            key = (info.model, info.version)
            if key not in self._known or self._known[key].raw != info.metadata:
                try:
                    self._known[key] = parse_metadata(
                        dict(info.metadata), Path(f"heartbeat of worker {info.instance}")
                    )
                except (ModelRepositoryError, TypeError, ValueError) as exc:
                    self._warn_once(info.instance, f"ignoring worker: {exc}")
                    continue
            usable.append(info)
        now = self._clock()
        for info in usable:
            self._last_seen[(info.model, info.version)] = now
        self._rebuild(usable)
        writes = self._rule_writes
        try:
            stored = await self._transport.get_rules(list(self._models))
        except TransportError as exc:  # e.g. an ACL without axon:route:*: keep the last
            self._warn_once("routing rules", f"cannot read them, keeping the last ones: {exc}")
        else:
            if writes == self._rule_writes:  # else the next refresh reads the new rule
                self._rules = self._decode_rules(stored)
        self.reachable = True

    def _decode_rules(self, stored: Mapping[str, str]) -> dict[str, RoutingRule]:
        """Stored rules that parse; one that does not is ignored (logged once per
        distinct value), as if the model had none."""
        rules = {}
        for model, raw in stored.items():
            try:
                rules[model] = decode_rule(raw)
            except ValueError as exc:
                self._warn_once(f"routing rule of {model} {raw[:200]!r}", f"ignored: {exc}")
        return rules

    def _warn_once(self, what: str, message: str) -> None:
        if what not in self._warned:
            if len(self._warned) > 10_000:  # bounded: keys of many short-lived workers
                self._warned.clear()
            self._warned.add(what)
            log.warning("%s: %s", what, message)

    def _rebuild(self, workers: list[WorkerInfo]) -> None:
        """The snapshot, indexed by model once (lookups read it as is)."""
        by_key: dict[tuple[str, int], list[WorkerInfo]] = {}
        for info in workers:
            by_key.setdefault((info.model, info.version), []).append(info)
        models: dict[str, list[ModelVersion]] = {}
        for key, metadata in sorted(self._known.items()):
            serving = tuple(by_key.get(key, ()))
            partitions = min((w.partitions for w in serving), default=1)
            models.setdefault(key[0], []).append(ModelVersion(metadata, serving, partitions))
        self._models = models

    def mark_down(self) -> None:
        """Another part of the gateway saw the queue fail: not ready until a refresh works."""
        self.reachable = False
        self._rebuild([])

    async def run(self) -> None:
        """Refresh forever; no error ends it. The queue unreachable marks it down (not
        ready) until it answers; a failed command (OOM, NOPERM…) keeps the last
        snapshot; each failure streak is logged."""
        failures = FailureLog(log, "registry refresh", time.monotonic)
        while True:
            was_reachable = self.reachable
            try:
                await self.refresh()
            except Exception as exc:
                if isinstance(exc, TransportDown):
                    if self.reachable:
                        log.error("%s", exc)
                    self.mark_down()
                elif not isinstance(exc, TransportError):
                    log.exception("registry refresh: unexpected error")
                failures.failed(exc, retry_in_s=self._refresh_s)
            else:
                if not was_reachable:
                    log.info("queue reachable; %d model versions known", len(self._known))
                failures.recovered()
            self.refreshed.set()
            await asyncio.sleep(self._refresh_s)

    # ----------------------------------------------------------------- queries

    def models(self) -> Mapping[str, list[ModelVersion]]:
        """Known models (sorted) → their versions, ascending. The snapshot itself: do
        not modify it."""
        return self._models

    def lookup(self, model: str, version: str | int | None = None) -> ModelVersion:
        """A known model version (``None`` = the highest ready one, else the highest
        held one, else the highest); 404 for an unknown model or version. Readiness is
        not checked."""
        versions = self._models.get(model)
        if not versions:
            raise NotFoundError(f"model {model!r} is not served here (see GET /v1/models)")
        if version is None or version == "":
            ready = [mv for mv in versions if mv.ready]
            held = [mv for mv in versions if self.held(mv)]
            return (ready or held or versions)[-1]
        number = _version_number(version)
        for mv in versions:
            if mv.version == number:
                return mv
        raise NotFoundError(
            f"model {model!r} has no version {version!r} "
            f"(versions: {[mv.version for mv in versions]})"
        )

    def rule(self, model: str) -> RoutingRule | None:
        """The routing rule this gateway applies to ``model`` (from the last refresh, or
        its own last write), if any."""
        return self._rules.get(model)

    def set_rule(self, model: str, rule: RoutingRule | None) -> None:
        """Apply a rule this gateway just stored (or removed) without waiting for the
        next refresh."""
        self._rule_writes += 1
        if rule is None:
            self._rules.pop(model, None)
        else:
            self._rules[model] = rule

    def route(
        self, model: str, header: Callable[[str], str | None]
    ) -> tuple[ModelVersion, str | None]:
        """The version an unversioned request for ``model`` goes to, and why: by the
        model's routing rule (``routing_rules.choose``; ``header(name)`` gives the
        request's sticky header value) or, with no rule, the default (``lookup(model)``,
        reason None). A rule whose versions have no live worker weighs the held ones
        instead (``AXON_HOLD_WITHOUT_WORKERS``: at zero, a rule pinning version 1 keeps
        holding for 1), and with none of those falls back to the default. 404 for an
        unknown model."""
        rule = self._rules.get(model)
        if rule is None:
            return self.lookup(model), None
        versions = self._models.get(model) or [self.lookup(model)]  # 404 if unknown
        ready = {mv.version for mv in versions if mv.ready}
        if not effective_weights(rule, ready):
            ready = {mv.version for mv in versions if self.held(mv)}
        sticky = header(rule.sticky_header) if rule.sticky_header else None
        draw = self._draw() if sticky is None else 0.0
        version, reason = choose(rule, ready, sticky_value=sticky, draw=draw)
        return self.lookup(model, version), reason

    def ready(self, model: str, version: str | int | None = None) -> ModelVersion:
        """``lookup`` plus 503 when the queue is down, or when no live worker serves the
        version, none did within the last ``no_worker_wait_ms`` (a worker that is
        restarting: its requests are queued, durable, and wait for it until their
        deadline) and the hold policy does not hold it (``held``: its requests wait
        the same way for a worker that has yet to start)."""
        mv = self.lookup(model, version)
        if not self.reachable:
            raise UnavailableError(f"{self._transport.name} is unreachable; try again shortly")
        if not mv.ready and not self.recently_served(mv) and not self.held(mv):
            raise UnavailableError(
                f"model {model!r} version {mv.version} has no live worker; try again shortly"
            )
        return mv

    def index(self, *, ready_only: bool = False) -> list[IndexEntry]:
        """Every known model version (the model repository and live workers), by name
        and version, with its state; only the READY ones with ``ready_only``."""
        entries = []
        for versions in self._models.values():
            for mv in versions:
                if not self.reachable:
                    reason = f"{self._transport.name} is unreachable"
                elif not mv.ready and self.held(mv):
                    reason = (
                        "no live worker serves it; its requests are held until a worker "
                        "starts or their deadline passes (AXON_HOLD_WITHOUT_WORKERS)"
                    )
                elif not mv.ready:
                    reason = "no live worker serves it"
                else:
                    reason = ""
                if ready_only and reason:
                    continue
                state = "UNAVAILABLE" if reason else "READY"
                entries.append(IndexEntry(mv.name, str(mv.version), state, reason))
        return entries

    def statistics(self, model: str | None, version: str | None) -> list[dict[str, Any]]:
        """Triton statistics entries (``stats``) of every version of every model (model
        None), of every version of ``model`` (version None), or of one version. 404 for
        an unknown model or version; 503 when the queue is down (statistics come from
        worker heartbeats)."""
        if model is not None:
            self.lookup(model, version)  # 404 before 503: the name is wrong either way
        if not self.reachable:
            raise UnavailableError(
                f"{self._transport.name} is unreachable; statistics come from worker heartbeats"
            )
        if model is None:
            selected = [mv for versions in self._models.values() for mv in versions]
        elif version is None:
            selected = list(self._models[model])
        else:
            selected = [self.lookup(model, version)]
        return [self.stats(mv) for mv in selected]

    def held(self, mv: ModelVersion) -> bool:
        """Requests for ``mv`` are queued even with no live worker
        (``AXON_HOLD_WITHOUT_WORKERS``)."""
        return self._hold.holds(mv.name, mv.version)

    def recently_served(self, mv: ModelVersion) -> bool:
        """A worker served ``mv`` within the last ``no_worker_wait_ms``."""
        seen = self._last_seen.get((mv.name, mv.version))
        return seen is not None and (self._clock() - seen) * 1000 < self._no_worker_wait_ms

    def stats(self, mv: ModelVersion) -> dict[str, Any]:
        """Triton statistics-extension entry for one model version, summed over workers."""
        total: dict[str, Any] = {}
        for info in mv.workers:
            _add(total, info.stats)
        durations = {
            key: {"count": int(total.get(key, {}).get("count", 0)),
                  "ns": int(total.get(key, {}).get("ns", 0))}
            for key in ("success", "fail", "queue", "compute_infer")
        }  # fmt: skip
        zero = {"count": 0, "ns": 0}
        return {
            "name": mv.name,
            "version": str(mv.version),
            "last_inference": max((int(w.stats.get("last_inference_ms", 0)) for w in mv.workers),
                                  default=0),
            "inference_count": int(total.get("inference_count", 0)),
            "execution_count": int(total.get("execution_count", 0)),
            "inference_stats": {
                **durations,
                "compute_input": zero,
                "compute_output": zero,
                "cache_hit": zero,
                "cache_miss": zero,
            },
            "batch_stats": [],
            "axon": {
                "workers": len(mv.workers),
                "expired": int(total.get("expired", 0)),
                "redeliveries": int(total.get("redeliveries", 0)),
                "dead_letters": int(total.get("dead_letters", 0)),
            },
        }  # fmt: skip


def _add(total: dict[str, Any], stats: Mapping[str, Any]) -> None:
    """Sum ``stats`` (nested counters) into ``total``; ``last_*`` fields are skipped."""
    for key, value in stats.items():
        if key.startswith("last_"):
            continue
        if isinstance(value, Mapping):
            _add(total.setdefault(key, {}), value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            total[key] = total.get(key, 0) + value


def _version_number(version: str | int) -> int:
    text = str(version)
    if not VERSION.match(text):
        raise NotFoundError(f"version {text!r}: must be a positive integer such as 1")
    return int(text)
