"""The requests waiting for a reply: one future per stream entry id, completed by the
transport's receive task. Nothing polls per request; a request that gives up (deadline)
forgets its future and a late reply for it is dropped."""

from __future__ import annotations

import asyncio
import logging

from services.contract.codec import Reply, decode_reply
from services.contract.errors import BadEntryError
from services.gateway.errors import UnavailableError

log = logging.getLogger(__name__)


class Replies:
    """Routes replies to waiting requests by the entry id their stream entry carried."""

    def __init__(self, where: str) -> None:
        self._where = where  # names the reply path in log lines
        self._waiting: dict[str, asyncio.Future[Reply]] = {}

    def expect(self, entry_id: str) -> asyncio.Future[Reply]:
        """A future completed when the reply for ``entry_id`` arrives. Register it before
        the entry is submitted: the reply may arrive before the submitter resumes."""
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[entry_id] = future
        return future

    def forget(self, entry_id: str) -> None:
        self._waiting.pop(entry_id, None)

    def deliver(self, payload: bytes) -> None:
        """Complete the future a raw reply (``codec.encode_reply``) belongs to; unknown
        ids and undecodable payloads are dropped (the latter logged)."""
        try:
            reply = decode_reply(payload)
        except BadEntryError as exc:
            log.error("dropping an undecodable reply on %s: %s", self._where, exc)
            return
        future = self._waiting.pop(reply.id, None)
        if future is not None and not future.done():
            future.set_result(reply)

    def fail_all(self, message: str) -> None:
        """Fail every waiting request with 503 ``message`` (their replies are lost)."""
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(UnavailableError(message))
