"""Pure batch collation with an injected clock: no sleeps, back-dated timestamps."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from services.runtime.batching import Collation, collate


@dataclass(frozen=True)
class Entry:
    name: str
    rows: int = 1
    arrived_ms: float = 1000.0
    deadline_ms: float | None = None
    job: bool = False


def is_job(entry: Entry) -> bool:
    return entry.job


def names(entries: list[Entry]) -> list[str]:
    return [e.name for e in entries]


def test_waits_for_more_until_queue_delay_passes() -> None:
    pending = [Entry("a", arrived_ms=1000.0)]
    early = collate(pending, max_batch_rows=8, max_queue_delay_ms=5, now_ms=1002.0)
    assert early.batch == [] and names(early.remaining) == ["a"]
    assert early.wait_ms == pytest.approx(3.0)
    due = collate(pending, max_batch_rows=8, max_queue_delay_ms=5, now_ms=1005.0)
    assert names(due.batch) == ["a"] and due.remaining == [] and due.wait_ms == 0.0


def test_full_batch_is_ready_at_once_and_counts_rows_not_requests() -> None:
    pending = [Entry("a", rows=3), Entry("b", rows=3), Entry("c", rows=3)]
    plan = collate(pending, max_batch_rows=6, max_queue_delay_ms=100, now_ms=1000.0)
    assert names(plan.batch) == ["a", "b"] and plan.rows == 6
    assert names(plan.remaining) == ["c"]


def test_entry_that_does_not_fit_makes_the_batch_full() -> None:
    pending = [Entry("a", rows=3), Entry("b", rows=5)]
    plan = collate(pending, max_batch_rows=6, max_queue_delay_ms=100, now_ms=1000.0)
    assert names(plan.batch) == ["a"] and names(plan.remaining) == ["b"]


def test_oversized_request_runs_alone() -> None:
    plan = collate(
        [Entry("big", rows=100)], max_batch_rows=8, max_queue_delay_ms=100, now_ms=1000.0
    )
    assert names(plan.batch) == ["big"]


def test_expired_entries_are_split_off_and_never_batched() -> None:
    pending = [
        Entry("late", deadline_ms=999.0),
        Entry("edge", deadline_ms=1000.0),
        Entry("ok", deadline_ms=5000.0),
    ]
    plan = collate(pending, max_batch_rows=8, max_queue_delay_ms=0, now_ms=1000.0)
    assert names(plan.expired) == ["late", "edge"]
    assert names(plan.batch) == ["ok"]


def test_earliest_deadline_caps_the_wait() -> None:
    pending = [Entry("a", arrived_ms=1000.0, deadline_ms=1003.0)]
    plan = collate(pending, max_batch_rows=8, max_queue_delay_ms=50, now_ms=1001.0)
    assert plan.batch == [] and plan.wait_ms == pytest.approx(2.0)


def test_oldest_arrival_sets_the_due_time() -> None:
    pending = [Entry("old", arrived_ms=990.0), Entry("new", arrived_ms=1000.0)]
    plan = collate(pending, max_batch_rows=8, max_queue_delay_ms=10, now_ms=1000.0)
    assert names(plan.batch) == ["old", "new"]


def test_flush_runs_a_partial_batch_immediately() -> None:
    pending = [Entry("a"), Entry("b")]
    plan = collate(pending, max_batch_rows=8, max_queue_delay_ms=1000, now_ms=1000.0, flush=True)
    assert names(plan.batch) == ["a", "b"]


def test_empty_pending() -> None:
    plan = collate([], max_batch_rows=8, max_queue_delay_ms=1, now_ms=0.0)
    assert (plan.batch, plan.expired, plan.remaining) == ([], [], [])


def test_zero_rows_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="max_batch_rows"):
        collate([Entry("a")], max_batch_rows=0, max_queue_delay_ms=1, now_ms=0.0)


def test_due_time_is_the_oldest_arrival_plus_delay_or_the_earliest_deadline() -> None:
    pending = [Entry("a", arrived_ms=1000.0), Entry("b", arrived_ms=1001.0, deadline_ms=1030.0)]
    plan = collate(pending, max_batch_rows=8, max_queue_delay_ms=50, now_ms=1002.0)
    assert plan.due_ms == 1030.0 and plan.wait_ms == 28.0
    plan = collate(pending, max_batch_rows=8, max_queue_delay_ms=20, now_ms=1002.0)
    assert plan.due_ms == 1020.0
    assert collate([], max_batch_rows=8, max_queue_delay_ms=1, now_ms=0.0).due_ms == math.inf


def test_a_waiting_plan_is_unchanged_until_its_due_time() -> None:
    """What the worker's collate-once-per-step relies on: collating a waiting plan's
    ``remaining`` again at any later time before ``due_ms`` gives the same answer, with
    ``wait_ms = due_ms - now``. From ``due_ms`` on it must be collated again: here the
    entry whose deadline made it due has expired, and the others wait longer."""
    pending = [
        Entry("a", rows=2, arrived_ms=1000.0),
        Entry("b", rows=1, arrived_ms=1000.5, deadline_ms=1007.25),
        Entry("c", rows=3, arrived_ms=1001.0, deadline_ms=1003.0),
        Entry("gone", arrived_ms=999.0, deadline_ms=1000.5),
    ]

    def collate_at(now_ms: float, entries: list[Entry]) -> Collation[Entry]:
        return collate(entries, max_batch_rows=8, max_queue_delay_ms=6.0, now_ms=now_ms)

    first = collate_at(1001.0, pending)
    assert first.batch == [] and names(first.expired) == ["gone"] and first.due_ms == 1003.0
    for now_ms in (1001.0, 1001.001, 1002.0, 1002.999):
        again = collate_at(now_ms, first.remaining)
        assert (again.batch, again.expired, again.remaining) == ([], [], first.remaining)
        assert again.due_ms == first.due_ms and again.wait_ms == first.due_ms - now_ms
    due = collate_at(first.due_ms, first.remaining)
    assert names(due.expired) == ["c"] and due.batch == [] and due.due_ms == 1006.0


def test_jobs_fill_at_most_max_low_rows_and_requests_pass_the_rest() -> None:
    pending = [Entry(f"j{n}", job=True) for n in range(6)] + [Entry("r1"), Entry("r2", rows=2)]
    plan = collate(pending, max_batch_rows=8, max_queue_delay_ms=100, now_ms=1000.0,
                   low=is_job, max_low_rows=2)  # fmt: skip
    assert names(plan.batch) == ["j0", "j1", "r1", "r2"] and plan.rows == 5
    assert names(plan.remaining) == ["j2", "j3", "j4", "j5"]  # in order, for the next batches
    assert plan.wait_ms == 0.0  # jobs were left out: the batch is full, it runs now


def test_a_first_job_larger_than_max_low_rows_still_runs() -> None:
    pending = [Entry("big", rows=5, job=True), Entry("j", job=True), Entry("r")]
    plan = collate(pending, max_batch_rows=8, max_queue_delay_ms=0, now_ms=1000.0,
                   low=is_job, max_low_rows=2)  # fmt: skip
    assert names(plan.batch) == ["big", "r"] and names(plan.remaining) == ["j"]


def test_jobs_within_max_low_rows_wait_like_requests() -> None:
    pending = [Entry("j", job=True), Entry("r")]
    plan = collate(pending, max_batch_rows=8, max_queue_delay_ms=5, now_ms=1002.0,
                   low=is_job, max_low_rows=2)  # fmt: skip
    assert plan.batch == [] and plan.wait_ms == pytest.approx(3.0)


def test_zero_low_rows_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="max_low_rows"):
        collate([Entry("a")], max_batch_rows=8, max_queue_delay_ms=0, now_ms=0.0,
                low=is_job, max_low_rows=0)  # fmt: skip
