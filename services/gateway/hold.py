"""Which model versions take requests while no worker serves them
(``AXON_HOLD_WITHOUT_WORKERS``): scale from zero.

A held request is queued as usual (backlog limits, 429) and waits for a worker until its
deadline (504): the stream's consumer group starts at id 0 (``protocol.ensure_group``),
so the first worker that starts reads every entry queued before it existed. Without a
hold, a version with no live worker gets 503 once ``AXON_NO_WORKER_WAIT_MS`` has passed
since its last worker went away. Only versions the gateway knows (the model repository,
or a worker seen earlier) are held; an unknown one is still 404.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.contract.metadata import MODEL_NAME, VERSION

_OTHER_BOOLEANS = frozenset({"yes", "no", "on", "off", "1", "0", "y", "n"})


@dataclass(frozen=True)
class HoldPolicy:
    """``every`` known version, the versions of ``models``, and ``versions``."""

    every: bool = False
    models: frozenset[str] = frozenset()
    versions: frozenset[tuple[str, int]] = frozenset()

    @classmethod
    def parse(cls, raw: str) -> HoldPolicy:
        """``true`` (every known version), ``false`` or empty (none), or a comma-separated
        list of ``model`` (its every version) and ``model:version`` items. ``ValueError``
        names the item that is neither; other boolean spellings (yes, on, 1…) are refused
        rather than read as model names."""
        text = raw.strip()
        if text.lower() in ("", "false"):
            return cls()
        if text.lower() == "true":
            return cls(every=True)
        if text.lower() in _OTHER_BOOLEANS:
            raise ValueError(f"write true or false (not {text!r}), or model / model:version items")
        models: set[str] = set()
        versions: set[tuple[str, int]] = set()
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            name, sep, version = item.partition(":")
            if not MODEL_NAME.match(name) or (sep and not VERSION.match(version)):
                raise ValueError(
                    f"expected true, false, or model / model:version items separated by "
                    f"commas (digits-cnn,digits-gan:1), got {item!r}"
                )
            if sep:
                versions.add((name, int(version)))
            else:
                models.add(name)
        return cls(models=frozenset(models), versions=frozenset(versions))

    def holds(self, model: str, version: int) -> bool:
        """Requests for ``model`` ``version`` wait while no worker serves it."""
        return self.every or model in self.models or (model, version) in self.versions

    def __bool__(self) -> bool:
        return self.every or bool(self.models) or bool(self.versions)


NO_HOLD = HoldPolicy()
"""The default: no version is held (a version with no worker gets 503)."""
