"""The gateway's side of stream partitions, in-process: requests go round-robin over as
many partitions as the live workers read (their heartbeats), each partition getting its
share of the backlog limit. (Partitions on real Redis and Redis Cluster:
tests/integration/services/test_partitions.py, tests/e2e/test_redis_cluster.py.)"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tests.support.inprocess import CLASSIFIER, infer_image, stack

IMAGE = f"/v2/models/{CLASSIFIER}/infer"
QUICK = {"X-Axon-Timeout-Ms": "20"}


def test_requests_spread_over_the_partitions_with_a_share_of_the_limit(tmp_path: Path) -> None:
    with stack(tmp_path, {"AXON_BACKLOG_LIMIT": "4"}) as gw:
        info = dataclasses.replace(gw.info(CLASSIFIER, "idle"), partitions=2)
        gw.heartbeat(info)
        seen: list[tuple[int, int]] = []
        submit = gw.queue.submit

        def recording(*args: Any, **kwargs: Any) -> Any:
            seen.append((kwargs["partition"], kwargs["limit"]))
            return submit(*args, **kwargs)

        gw.queue.submit = recording  # type: ignore[method-assign]
        statuses = [
            gw.client.post(IMAGE, json=infer_image(1), headers=QUICK).status_code for _ in range(3)
        ]
        assert [p for p, _ in seen] == [0, 1, 0]  # round-robin over both partitions
        assert {limit for _, limit in seen} == {2}  # each partition: half of 4
        # The memory queue keeps one stream per version, so its share fills at 2 entries.
        assert statuses == [504, 504, 429]


def test_the_fewest_partitions_any_live_worker_reads_are_used(tmp_path: Path) -> None:
    with stack(tmp_path) as gw:
        wide = dataclasses.replace(gw.info(CLASSIFIER, "wide"), partitions=4)
        narrow = dataclasses.replace(gw.info(CLASSIFIER, "narrow"), partitions=2)
        gw.heartbeat(wide)
        gw.heartbeat(narrow)
        registry = gw.client.app.state.gateway.registry  # type: ignore[attr-defined]
        assert registry.lookup(CLASSIFIER).partitions == 2
