"""One process of the 2-process DDP test (tests/integration/training/test_torchrun.py).

Started by ``torchrun --standalone --nproc-per-node=2 ddp_worker.py OUT``. Each rank seeds
its network differently (DDP must broadcast rank 0's weights), trains two epochs on its
shard, and writes its final weights and what it saw into OUT for the test to compare,
including the backend threads still running after ``shutdown`` (there must be none, even
with automatic garbage collection off: a trained DDP wrapper is a reference cycle).
"""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path

import torch
from torch import nn

from training.distributed import (
    DistContext,
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

EPOCHS = 2
BATCH = 3
LR = 0.1


def data() -> tuple[torch.Tensor, torch.Tensor]:
    """10 samples (not a multiple of 2 × BATCH: shards are padded and batches ragged)."""
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(10, 3, generator=gen)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
    return x, y


def network(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(3, 1)


def main(out: Path) -> None:
    """As ``python -m training train`` does: join, train (the DDP wrapper lives only in
    there, like engine.fit's), leave the group; then report what is still running."""
    gc.disable()  # no collection by chance: shutdown itself must free the dropped wrapper
    ctx = init_distributed("cpu")
    seen = train(ctx, out)
    shutdown(ctx)
    seen["gloo_threads_after_shutdown"] = gloo_threads()
    (out / f"seen-{ctx.rank}.json").write_text(json.dumps(seen))


def train(ctx: DistContext, out: Path) -> dict[str, object]:
    model = wrap_model(network(100 + ctx.rank), ctx)
    x, y = data()
    batches = sharded_batches((x, y), BATCH, ctx, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    steps = 0
    for _ in range(EPOCHS):
        for xb, yb in batches():
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(xb), yb)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            steps += 1
    plain = unwrap(model)
    torch.save(plain.state_dict(), out / f"params-{ctx.rank}.pt")
    on_main(ctx, lambda: (out / f"main-{ctx.rank}").write_text("written by rank 0\n"))
    return {
        "rank": ctx.rank,
        "world_size": ctx.world_size,
        "backend": ctx.backend,
        "steps": steps,
        "mean_rank": mean_across_ranks(float(ctx.rank), ctx),
        "shard_epoch0": shard_indices(len(x), ctx, seed=0, epoch=0).tolist(),
        "keys": sorted(plain.state_dict()),
        "wrapped": type(model).__name__,
        "current_is_ctx": current() is ctx,
    }


def gloo_threads() -> list[str]:
    """Names of this process's threads that belong to gloo (Linux: /proc/self/task)."""
    names = (
        Path(f"/proc/self/task/{tid}/comm").read_text().strip()
        for tid in os.listdir("/proc/self/task")
    )
    return sorted(n for n in names if "gloo" in n)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
