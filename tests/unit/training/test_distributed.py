"""training.distributed in one process: torchrun environment, sharding, the no-op helpers.

The real two-process gloo run under torchrun is tests/integration/training/test_torchrun.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.distributed import (
    SINGLE,
    DistContext,
    context_from_env,
    current,
    init_distributed,
    mean_across_ranks,
    on_main,
    shard_indices,
    sharded_batches,
    shutdown,
    unwrap,
    wrap_model,
)
from training.errors import ConfigError


def test_no_torchrun_variables_is_a_single_process_run() -> None:
    assert context_from_env({}) == SINGLE
    assert not SINGLE.enabled and SINGLE.is_main


def test_torchrun_variables_are_read() -> None:
    ctx = context_from_env({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"})
    assert (ctx.rank, ctx.local_rank, ctx.world_size) == (3, 1, 4)
    assert ctx.enabled and not ctx.is_main


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RANK": "0"}, "LOCAL_RANK, WORLD_SIZE missing"),
        ({"RANK": "2", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}, "RANK=2 must be below"),
        ({"RANK": "x", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}, "RANK='x' is not an integer"),
        ({"RANK": "0", "LOCAL_RANK": "-1", "WORLD_SIZE": "2"}, "LOCAL_RANK=-1 must be >= 0"),
        ({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE must be >= 1"),
        ({"RANK": "0", "LOCAL_RANK": "1", "WORLD_SIZE": "2"}, "LOCAL_RANK=1 cannot exceed"),
    ],
)
def test_bad_torchrun_variables_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        context_from_env(env)


def test_single_process_helpers_are_no_ops() -> None:
    ctx = init_distributed("cpu", env={})
    assert ctx == DistContext(device=torch.device("cpu"))
    assert current() is ctx
    model = nn.Linear(2, 1)
    assert wrap_model(model, ctx) is model
    assert unwrap(model) is model
    assert mean_across_ranks(2.5, ctx) == 2.5
    assert on_main(ctx, lambda: "done") == "done"
    shutdown(ctx)
    assert current() is SINGLE


@pytest.mark.parametrize("n", [1, 7, 10, 12])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_shards_are_equal_sized_and_cover_every_sample(n: int, world: int) -> None:
    shards = [
        shard_indices(n, DistContext(rank=r, world_size=world), seed=5, epoch=2)
        for r in range(world)
    ]
    assert {len(s) for s in shards} == {-(-n // world)}
    everything = torch.cat(shards).tolist()
    assert set(everything) == set(range(n))
    if n % world == 0:  # no padding: the shards are disjoint
        assert len(everything) == len(set(everything))


def test_shards_follow_seed_and_epoch() -> None:
    ctx = DistContext(rank=1, world_size=2)
    first = shard_indices(100, ctx, seed=0, epoch=0)
    assert torch.equal(first, shard_indices(100, ctx, seed=0, epoch=0))
    assert not torch.equal(first, shard_indices(100, ctx, seed=0, epoch=1))
    ordered = shard_indices(6, ctx, seed=0, epoch=0, shuffle=False)
    assert ordered.tolist() == [1, 3, 5]


def test_sharded_batches_reshuffle_each_epoch() -> None:
    x = torch.arange(8.0).unsqueeze(1)
    epochs = sharded_batches((x, x * 2), 3, DistContext(rank=0, world_size=2), seed=1)
    one, two = epochs(), epochs()
    assert [len(b[0]) for b in one] == [3, 1]
    assert all(torch.equal(b[1], b[0] * 2) for b in one)
    assert torch.cat([b[0] for b in one]).tolist() != torch.cat([b[0] for b in two]).tolist()


def test_bad_shard_requests_are_refused() -> None:
    with pytest.raises(ConfigError, match="empty"):
        shard_indices(0, SINGLE, seed=0, epoch=0)
    with pytest.raises(ConfigError, match="batch_size"):
        sharded_batches((torch.zeros(2),), 0, SINGLE, seed=0)
