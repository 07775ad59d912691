"""Async jobs, the pure parts: the ``Prefer: respond-async`` header (RFC 7240), job ids,
where a job is stored, and the job's meta (how its result is rendered).

- A job id is ``{model}.{version}.{token}`` (``token``: 32 hex digits, random): it names
  the model version whose hash slot holds the job (``services.contract.jobs``), so any
  gateway finds it with one read, no scan. Model names never contain ``.``.
- A job is stored under ``axon:job:{model:version}:{digest}``, ``digest`` a SHA-256 of
  the caller's credential (its API key; nothing without keys) and the id: a job is only
  ever found with the key it was submitted with; with another it is 404, as an unknown
  one.
- The meta (msgpack, never pickle; decoded defensively) keeps what the endpoint needs
  to render the worker's reply exactly as its synchronous answer: the endpoint
  (``kind``), its options (e.g. the OIP request id and output selection, top-k), the
  model version and when it was submitted.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from services.contract import jobs
from services.contract.metadata import MODEL_NAME, VERSION

RESPOND_ASYNC = "respond-async"
_TOKEN = re.compile(r"^[0-9a-f]{32}$")


def wants_async(values: Iterable[str]) -> bool:
    """True when a ``Prefer`` header (each of ``values``) asks for ``respond-async``:
    preferences are comma-separated, each ``token[=value]`` with ``;`` parameters; the
    token is case-insensitive; others (``wait``, unknown ones) are ignored."""
    for value in values:
        for preference in value.split(","):
            token = preference.split(";", 1)[0].split("=", 1)[0].strip().lower()
            if token == RESPOND_ASYNC:
                return True
    return False


@dataclass(frozen=True)
class JobId:
    """A parsed job id (see the module docstring)."""

    model: str
    version: int
    token: str

    def __str__(self) -> str:
        return f"{self.model}.{self.version}.{self.token}"

    @classmethod
    def new(cls, model: str, version: int) -> JobId:
        return cls(model, version, secrets.token_hex(16))

    @classmethod
    def parse(cls, text: str) -> JobId:
        """``ValueError`` for anything that is not a job id."""
        parts = text.split(".")
        if (
            len(parts) != 3
            or not MODEL_NAME.match(parts[0])
            or not VERSION.match(parts[1])
            or not _TOKEN.match(parts[2])
        ):
            raise ValueError(f"not a job id: {text[:80]!r}")
        return cls(parts[0], int(parts[1]), parts[2])

    def store_key(self, principal: bytes) -> str:
        """Where the job is stored for the caller presenting ``principal``."""
        digest = hashlib.sha256(principal + b"\0" + str(self).encode()).hexdigest()[:40]
        return jobs.job_key(self.model, self.version, digest)


@dataclass(frozen=True)
class JobMeta:
    """How a job's reply becomes its endpoint's response (``results.render_job``)."""

    kind: str
    """The endpoint: ``infer``, ``classify``, ``forecast`` or ``generate``."""
    options: Mapping[str, Any]
    """The endpoint's rendering options (msgpack types only)."""
    model: str
    version: int
    created_ms: int

    def encode(self) -> bytes:
        return bytes(
            msgpack.packb(
                [1, self.kind, self.model, self.version, dict(self.options), self.created_ms]
            )
        )

    @classmethod
    def decode(cls, raw: bytes) -> JobMeta:
        """Parse stored meta; ``ValueError`` for anything else."""
        try:
            version, kind, model, model_version, options, created = msgpack.unpackb(raw)
            meta = cls(str(kind), dict(options), str(model), int(model_version), int(created))
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise ValueError(f"malformed job meta ({exc})") from None
        if version != 1:
            raise ValueError(f"job meta version {version!r}")
        return meta
