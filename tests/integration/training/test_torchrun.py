"""A real two-process DDP run: ``torchrun --standalone --nproc-per-node=2`` with gloo.

Both ranks train ddp_worker.py's network on their shards; the test checks what each saw,
that they ended with the same weights, that those equal one process stepping on the union
of both ranks' mini-batches, and that ``shutdown`` ended the group: no gloo thread left to
outlive the interpreter (the cause of a SIGABRT under load, see training/distributed.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from training.distributed import DistContext, shard_indices

WORKER = Path(__file__).with_name("ddp_worker.py")


def _reference() -> dict[str, torch.Tensor]:
    """One process, rank 0's initial weights, each step on the union of both ranks'
    mini-batches: what DDP's gradient averaging must reproduce exactly."""
    sys.path.insert(0, str(WORKER.parent))
    try:
        import ddp_worker as w
    finally:
        sys.path.remove(str(WORKER.parent))
    x, y = w.data()
    model = w.network(100)
    opt = torch.optim.SGD(model.parameters(), lr=w.LR)
    ranks = [DistContext(rank=r, world_size=2) for r in range(2)]
    for epoch in range(w.EPOCHS):
        shards = [shard_indices(len(x), c, seed=0, epoch=epoch) for c in ranks]
        for start in range(0, len(shards[0]), w.BATCH):
            parts = [s[start : start + w.BATCH] for s in shards]
            opt.zero_grad()
            # mean over each rank's batch, then the mean of the two (DDP averages grads)
            losses = [nn.functional.mse_loss(model(x[p]), y[p]) for p in parts]
            loss = (losses[0] + losses[1]) / 2
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
    return {k: v.detach() for k, v in model.state_dict().items()}


def test_two_process_gloo_training_under_torchrun(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
           "--nproc-per-node=2", str(WORKER), str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    seen = [json.loads((tmp_path / f"seen-{r}.json").read_text()) for r in range(2)]
    for rank, s in enumerate(seen):
        assert s["rank"] == rank and s["world_size"] == 2 and s["backend"] == "gloo"
        assert s["wrapped"] == "DistributedDataParallel" and s["current_is_ctx"]
        assert s["keys"] == ["bias", "weight"]  # unwrap: no "module." prefix
        assert s["mean_rank"] == pytest.approx(0.5)
        assert s["gloo_threads_after_shutdown"] == [], "shutdown left the process group alive"
    assert seen[0]["steps"] == seen[1]["steps"] == 4  # 5 samples per rank, batch 3, 2 epochs
    assert set(seen[0]["shard_epoch0"]) | set(seen[1]["shard_epoch0"]) == set(range(10))
    assert not set(seen[0]["shard_epoch0"]) & set(seen[1]["shard_epoch0"])

    assert (tmp_path / "main-0").is_file() and not (tmp_path / "main-1").exists()
    params = [torch.load(tmp_path / f"params-{r}.pt", weights_only=True) for r in range(2)]
    expected = _reference()
    for key, value in expected.items():
        assert torch.equal(params[0][key], params[1][key]), f"{key} differs between ranks"
        torch.testing.assert_close(params[0][key], value, rtol=1e-5, atol=1e-6)
