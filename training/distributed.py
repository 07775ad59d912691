"""Multi-GPU (and multi-process CPU) training with ``torchrun`` and DistributedDataParallel.

``torchrun --nproc-per-node=N -m training train …`` starts N copies of the training
command with ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``
in their environment. This module turns that environment into a ``DistContext`` and
gives the training loop what it needs to run under DDP:

- ``init_distributed`` / ``shutdown``: join the process group (NCCL on CUDA, gloo on
  CPU) and pin each process to its GPU (``cuda:LOCAL_RANK``); ``shutdown`` really ends
  the group, so its threads are joined before the interpreter exits (see
  ``init_distributed``).
- ``wrap_model`` / ``unwrap``: DistributedDataParallel around the network, and back to
  the plain module for checkpoints and export (no ``module.`` prefixes).
- ``shard_indices`` / ``sharded_batches``: each rank gets a disjoint, equally sized share
  of every epoch (same shuffle on all ranks, like ``DistributedSampler``), so every rank
  runs the same number of steps and DDP's gradient all-reduce never waits forever.
- ``mean_across_ranks``: one value (the validation loss) averaged over the ranks, so
  early stopping decides the same on every rank.
- ``on_main``: run a side effect (checkpoint, export into the model repository) on rank 0
  only, then wait for it on every rank.
- ``current``: the context of this process, for code that is not handed one.

Without torchrun (no ``WORLD_SIZE`` in the environment, or ``WORLD_SIZE=1``) everything
here is a no-op: the context is rank 0 of 1, ``wrap_model`` returns the model itself and
``sharded_batches`` is a plain shuffled epoch.
"""

from __future__ import annotations

import gc
import importlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from training.errors import ConfigError

T = TypeVar("T")

TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE")
"""Variables torchrun sets for every process it starts (plus MASTER_ADDR/MASTER_PORT)."""


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job: its rank, its GPU, the job's size."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None  # None: no process group (one process)

    @property
    def enabled(self) -> bool:
        """True when several processes train together (a process group exists)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, reports and exports."""
        return self.rank == 0


SINGLE = DistContext()
"""The context of a plain, one-process run."""

_current: DistContext = SINGLE


def current() -> DistContext:
    """The context ``init_distributed`` set up in this process (``SINGLE`` before it or
    after ``shutdown``). One process is one rank, so the pipelines can ask for it here
    instead of having it passed down through every call."""
    return _current


def context_from_env(env: Mapping[str, str]) -> DistContext:
    """Read torchrun's variables; a one-process context when they are absent.

    Raises ``ConfigError`` when they are partial or inconsistent (for example
    ``RANK >= WORLD_SIZE``), naming the variable.
    """
    present = [name for name in TORCHRUN_VARS if env.get(name, "").strip()]
    if not present:
        return SINGLE
    if len(present) != len(TORCHRUN_VARS):
        missing = ", ".join(name for name in TORCHRUN_VARS if name not in present)
        raise ConfigError(
            f"distributed: {', '.join(present)} set but {missing} missing; start "
            "distributed training with torchrun, which sets all of them"
        )
    rank = _non_negative(env, "RANK")
    local_rank = _non_negative(env, "LOCAL_RANK")
    world_size = _non_negative(env, "WORLD_SIZE")
    if world_size < 1:
        raise ConfigError(f"distributed: WORLD_SIZE must be >= 1, got {world_size}")
    if rank >= world_size:
        raise ConfigError(f"distributed: RANK={rank} must be below WORLD_SIZE={world_size}")
    if local_rank > rank:
        raise ConfigError(f"distributed: LOCAL_RANK={local_rank} cannot exceed RANK={rank}")
    return DistContext(rank=rank, local_rank=local_rank, world_size=world_size)


def init_distributed(
    device: str = "auto", env: Mapping[str, str] | None = None, backend: str | None = None
) -> DistContext:
    """Join torchrun's process group and pick this process's device.

    ``device``: ``auto`` (CUDA when torch sees a GPU), ``cuda`` or ``cpu``. On CUDA each
    process uses ``cuda:LOCAL_RANK`` and the NCCL backend; on CPU the gloo backend.
    ``backend`` overrides the choice. A one-process run joins no group.
    """
    global _current
    ctx = context_from_env(os.environ if env is None else env)
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise ConfigError("device: 'cuda' was asked for but torch sees no GPU")
        if ctx.local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"distributed: LOCAL_RANK={ctx.local_rank} but this node has "
                f"{torch.cuda.device_count()} GPU(s); start at most that many processes "
                "per node (torchrun --nproc-per-node)"
            )
        torch.cuda.set_device(ctx.local_rank)
        chosen = torch.device("cuda", ctx.local_rank)
    else:
        chosen = torch.device("cpu")
    if not ctx.enabled:
        _current = DistContext(device=chosen)
        return _current
    group_backend = backend or ("nccl" if use_cuda else "gloo")
    if not dist.is_initialized():
        _import_group_defaults()
        dist.init_process_group(backend=group_backend, rank=ctx.rank, world_size=ctx.world_size)
    _current = DistContext(
        rank=ctx.rank,
        local_rank=ctx.local_rank,
        world_size=ctx.world_size,
        device=chosen,
        backend=group_backend,
    )
    return _current


GROUP_DEFAULT_MODULES = ("torch.distributed.nn",)
"""Modules whose functions take ``group=group.WORLD`` as a default argument."""


def _import_group_defaults() -> None:
    """Import, before the default process group exists, the torch modules that bind it
    into default arguments at import time.

    ``torch.distributed.nn.functional`` declares ``def all_reduce(..., group=group.WORLD)``:
    imported after ``init_process_group`` (DDP's constructor gets there through
    ``torch._dynamo`` → ``torch.distributed.fsdp`` → …), its ten functions hold the group
    for the life of the interpreter, so ``destroy_process_group`` cannot free it and gloo's
    worker threads run on into interpreter shutdown. A worker thread that is still letting
    go of its last collective then (a loaded machine delays it) drops a tensor with a
    Python object on a finalizing interpreter: SIGABRT, "terminate called without an
    active exception". Imported first, the defaults are ``None`` and ``shutdown`` joins
    those threads while the interpreter is whole.
    """
    for name in GROUP_DEFAULT_MODULES:
        importlib.import_module(name)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (call once, at the end of training).

    The group is freed here, which drains and joins its backend's threads (gloo: a worker
    pool and an I/O loop) while the interpreter is whole, provided nothing else holds it:
    drop the ``wrap_model`` wrapper first (DDP keeps the group; ``engine.fit``'s is gone
    when it returns). A trained DDP wrapper sits in a reference cycle, so dropping the last
    name does not free it; only the cyclic collector does, at a moment set by allocation
    counts. ``gc.collect()`` runs first so a dropped wrapper is gone before the group is
    destroyed, not by chance. tests/integration/training/test_torchrun.py checks, with
    automatic collection off, that no thread is left.
    """
    global _current
    if ctx.enabled and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
    _current = SINGLE


def wrap_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """DistributedDataParallel around ``model`` (already on ``ctx.device``), or the model
    itself in a one-process run. Gradients are averaged over the ranks in ``backward``."""
    if not ctx.enabled:
        return model
    if ctx.device.type == "cuda":
        return DistributedDataParallel(
            model, device_ids=[ctx.local_rank], output_device=ctx.local_rank
        )
    return DistributedDataParallel(model)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain network inside a DDP wrapper (state_dict keys without ``module.``)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def shard_indices(
    n: int, ctx: DistContext, *, seed: int, epoch: int, shuffle: bool = True
) -> torch.Tensor:
    """This rank's sample indices for one epoch (``torch.long``).

    All ranks draw the same permutation (seeded by ``seed`` and ``epoch``) and take every
    ``world_size``-th index starting at their rank. The permutation is padded by wrapping
    around so each rank gets exactly ``ceil(n / world_size)`` indices, as
    ``torch.utils.data.DistributedSampler`` does: equal step counts on every rank.
    """
    if n < 1:
        raise ConfigError("distributed: cannot shard an empty data set")
    if shuffle:
        gen = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(n, generator=gen)
    else:
        order = torch.arange(n)
    per_rank = -(-n // ctx.world_size)
    total = per_rank * ctx.world_size
    if total > n:
        repeats = -(-total // n)
        order = order.repeat(repeats)[:total]
    return order[ctx.rank : total : ctx.world_size]


def sharded_batches(
    tensors: tuple[torch.Tensor, ...], batch_size: int, ctx: DistContext, seed: int
) -> Callable[[], Iterable[tuple[torch.Tensor, ...]]]:
    """A ``batches()`` callable for ``engine.fit``: each call is one epoch of this rank's
    shard in mini-batches of ``batch_size`` (per rank; the global batch is
    ``batch_size * world_size``). Same shape as ``pipelines.common.shuffled_batches``."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    n = len(tensors[0])
    epoch_counter = [0]

    def epoch() -> list[tuple[torch.Tensor, ...]]:
        idx = shard_indices(n, ctx, seed=seed, epoch=epoch_counter[0])
        epoch_counter[0] += 1
        idx = idx.to(tensors[0].device)
        return [
            tuple(t[idx[i : i + batch_size]] for t in tensors)
            for i in range(0, len(idx), batch_size)
        ]

    return epoch


def mean_across_ranks(value: float, ctx: DistContext) -> float:
    """``value`` averaged over all ranks (the same result on every rank)."""
    if not ctx.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=_collective_device(ctx))
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return float(tensor.item()) / ctx.world_size


def on_main(ctx: DistContext, fn: Callable[[], T]) -> T | None:
    """Run ``fn`` on rank 0 only (checkpoint, export, report), then wait on every rank
    until it is done, so no rank reads a file rank 0 has not finished writing.
    Returns ``fn()``'s result on rank 0 and ``None`` elsewhere."""
    result = fn() if ctx.is_main else None
    barrier(ctx)
    return result


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op in a one-process run)."""
    if ctx.enabled:
        if ctx.backend == "nccl":
            dist.barrier(device_ids=[ctx.local_rank])
        else:
            dist.barrier()


def _collective_device(ctx: DistContext) -> torch.device:
    return ctx.device if ctx.backend == "nccl" else torch.device("cpu")


def _non_negative(env: Mapping[str, str], name: str) -> int:
    raw = env[name].strip()
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"distributed: {name}={raw!r} is not an integer") from None
    if value < 0:
        raise ConfigError(f"distributed: {name}={value} must be >= 0")
    return value
