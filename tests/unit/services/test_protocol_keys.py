"""Key names and entry field parsing of the Redis protocol (no Redis needed)."""

from __future__ import annotations

import pytest

from services.contract import protocol


def test_key_names_follow_the_design() -> None:
    assert protocol.stream_key("digits-cnn", 3) == "axon:q:digits-cnn:3"
    assert protocol.reply_key("gw-1") == "axon:r:gw-1"
    assert protocol.dlq_key("digits-cnn") == "axon:dlq:digits-cnn"
    assert protocol.worker_key("digits-cnn", 3, "pod-a") == "axon:w:digits-cnn:3:pod-a"
    assert protocol.GROUP == "workers"


def test_entry_fields_are_parsed() -> None:
    entry = protocol.StreamEntry(
        "1700000000123-4",
        {b"id": b"req-1", b"reply": b"axon:r:gw", b"deadline": b"1700000005000", b"body": b"\x80"},
    )
    assert (entry.request_id, entry.reply_to, entry.deadline_ms, entry.body) == (
        "req-1",
        "axon:r:gw",
        1700000005000,
        b"\x80",
    )
    assert protocol.entry_time_ms(entry.entry_id) == 1700000000123


@pytest.mark.parametrize("raw", [None, b"0", b"-5", b"soon"])
def test_missing_zero_or_bad_deadline_means_none(raw: bytes | None) -> None:
    fields = {b"deadline": raw} if raw is not None else {}
    assert protocol.StreamEntry("1-0", fields).deadline_ms is None


def test_worker_info_round_trips_through_json() -> None:
    info = protocol.WorkerInfo(
        instance="a",
        model="m",
        version=2,
        provider="CPUExecutionProvider",
        max_batch_rows=64,
        metadata={"name": "m"},
        stats={"inference_count": 3},
        started_at_ms=1,
        updated_at_ms=2,
        pid=7,
        host="h",
    )
    assert protocol.WorkerInfo.from_json(info.to_json()) == info
