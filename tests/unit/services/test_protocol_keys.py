"""Key names and entry field parsing of the Redis protocol (no Redis needed)."""

from __future__ import annotations

import pytest

from services.contract import protocol


def test_key_names_follow_the_design() -> None:
    assert protocol.stream_key("digits-cnn", 3) == "axon:q:{digits-cnn:3}"
    assert protocol.queued_bytes_key("axon:q:{digits-cnn:3}") == "axon:qb:{digits-cnn:3}"
    assert protocol.reply_key("gw-1", "digits-cnn", 3) == "axon:r:{digits-cnn:3}:gw-1"
    assert protocol.dlq_key("digits-cnn", 3) == "axon:dlq:{digits-cnn:3}"
    assert protocol.worker_key("digits-cnn", 3, "pod-a") == "axon:w:{digits-cnn:3}:pod-a"
    assert protocol.routing_key("digits-cnn") == "axon:route:digits-cnn"
    assert protocol.GROUP == "workers"


def test_stream_keys_parse_back() -> None:
    parse = protocol.parse_stream_key
    assert parse(protocol.stream_key("digits-cnn", 12)) == ("digits-cnn", 12, 0)
    assert parse(protocol.stream_key("digits-cnn", 12, 3)) == ("digits-cnn", 12, 3)
    assert protocol.stream_key("digits-cnn", 12, 0) == "axon:q:{digits-cnn:12}"
    for bad in ("axon:q:digits-cnn:1", "axon:q:{digits-cnn}", "axon:qb:{m:1}", "axon:q:{:1}",
                "axon:q:{m:1:0}", "axon:q:{m:1:2:3}", "axon:q:{m:x}"):  # fmt: skip
        with pytest.raises(ValueError, match="not a request stream key"):
            protocol.parse_stream_key(bad)


def _hash_tag(key: str) -> str:
    """What Redis Cluster hashes: the text in the first non-empty ``{…}``, else the key."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1 : end] if start >= 0 and end > start + 1 else key


def test_every_key_of_a_model_version_shares_one_hash_slot() -> None:
    """What one script, transaction or blocking pop touches must be in one slot on Redis
    Cluster (else CROSSSLOT): stream, byte counter, reply lists, dead letters, heartbeats."""
    stream = protocol.stream_key("digits-cnn", 3)
    keys = [
        stream,
        protocol.queued_bytes_key(stream),
        protocol.reply_key("gw-1", "digits-cnn", 3),
        protocol.reply_key("gw-2", "digits-cnn", 3),
        protocol.dlq_key("digits-cnn", 3),
        protocol.worker_key("digits-cnn", 3, "pod-a"),
    ]
    assert {_hash_tag(key) for key in keys} == {"digits-cnn:3"}
    assert _hash_tag(protocol.stream_key("digits-cnn", 4)) != _hash_tag(stream)


def test_each_partition_has_its_own_slot_for_all_its_keys() -> None:
    """Partition p ≥ 1 of a model version: stream, counter, dead letters and reply lists
    in the partition's own slot (its tag), apart from partition 0 and from each other."""
    tags = set()
    for partition in range(4):
        stream = protocol.stream_key("digits-cnn", 3, partition)
        keys = [
            stream,
            protocol.queued_bytes_key(stream),
            protocol.reply_key("gw-1", "digits-cnn", 3, partition),
            protocol.dlq_key("digits-cnn", 3, partition),
        ]
        (tag,) = {_hash_tag(key) for key in keys}
        tags.add(tag)
    assert tags == {"digits-cnn:3", "digits-cnn:3:1", "digits-cnn:3:2", "digits-cnn:3:3"}


def test_worker_patterns_match_only_their_keys() -> None:
    from fnmatch import fnmatchcase

    key = protocol.worker_key("digits-cnn", 3, "pod-a")
    assert fnmatchcase(key, protocol.worker_pattern())
    assert fnmatchcase(key, protocol.worker_pattern("digits-cnn"))
    assert fnmatchcase(key, protocol.worker_pattern("digits-cnn", 3))
    assert not fnmatchcase(key, protocol.worker_pattern("digits-cnn", 4))
    assert not fnmatchcase(key, protocol.worker_pattern("digits"))


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
