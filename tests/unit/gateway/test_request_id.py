"""Request ids the gateway makes (``middleware.request_id.new_id``)."""

from __future__ import annotations

import os

from services.gateway.middleware.request_id import new_id


def test_made_ids_are_32_hex_digits_and_a_forked_child_makes_its_own() -> None:
    """Ids come from the process's own generator: a child forked from a gateway (or a
    gateway process started by fork) must not repeat its parent's sequence."""
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.write(write, " ".join(new_id() for _ in range(10)).encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child = pipe.read().split()
    parent = [new_id() for _ in range(10)]
    assert status == 0 and len(child) == 10
    assert not set(child) & set(parent)
