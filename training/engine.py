"""The training loop shared by the classifier and the forecaster.

Forward propagation computes the loss of a mini-batch; back propagation
(`loss.backward()`) fills every parameter's gradient; the optimizer updates the
weights. Early stopping watches the validation loss and restores the best weights.
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from training.config import CommonConfig, to_dict
from training.distributed import current, mean_across_ranks, sharded_batches, unwrap, wrap_model
from training.errors import ConfigError


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a run is repeatable on the same machine."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    """`auto` = CUDA when torch sees a GPU, else CPU; `cuda` without a GPU is an error."""
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError(
                "device: 'cuda' was asked for but torch sees no GPU; use --device cpu or auto, "
                "or install a CUDA build of torch (see README)"
            )
        return torch.device("cuda")
    return torch.device("cpu")


def train_device(cfg: CommonConfig) -> torch.device:
    """The device to train on: this rank's GPU under torchrun, else `pick_device`.

    Also applies ``cfg.threads``: measured here, the GAN trained 2.5x faster on one
    thread than on two when the machine's two cores were busy with other work (OpenMP
    threads spin while they wait for each other).
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ctx = current()
    return ctx.device if ctx.enabled else pick_device(cfg.device)


def shuffled_batches(
    tensors: tuple[torch.Tensor, ...], batch_size: int, generator: torch.Generator
) -> Callable[[], list[tuple[torch.Tensor, ...]]]:
    """A function giving one freshly shuffled epoch of mini-batches per call."""
    n = len(tensors[0])

    def epoch() -> list[tuple[torch.Tensor, ...]]:
        order = torch.randperm(n, generator=generator).to(tensors[0].device)
        return [
            tuple(t[order[i : i + batch_size]] for t in tensors) for i in range(0, n, batch_size)
        ]

    return epoch


def make_optimizer(cfg: CommonConfig, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """SGD (with momentum), Adam or RMSProp; `weight_decay` is the L2 penalty."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(
            params, lr=cfg.lr, betas=(cfg.beta1, 0.999), weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    raise ConfigError(
        f"optimizer: unknown value {cfg.optimizer!r}; valid values: sgd, adam, rmsprop"
    )


def progress(iterable: Iterable[Any], *, enabled: bool, desc: str, total: int | None = None) -> Any:
    """A tqdm bar on stderr when enabled and stderr is a terminal, else the iterable."""
    show = enabled and sys.stderr.isatty()
    return tqdm(iterable, desc=desc, total=total, disable=not show, leave=False, dynamic_ncols=True)


@dataclass
class History:
    """What one `fit` call saw: per-epoch losses and per-step gradient norms."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)  # per step, before clipping
    steps_per_epoch: list[int] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False

    def write_grad_log(self, path: Path) -> Path:
        """CSV ``step,epoch,grad_norm``: the gradient norm of every step before clipping."""
        lines = ["step,epoch,grad_norm"]
        step = 0
        for epoch, n in enumerate(self.steps_per_epoch, start=1):
            for _ in range(n):
                lines.append(f"{step + 1},{epoch},{self.grad_norm[step]:.6g}")
                step += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def summary(self) -> dict[str, Any]:
        norms = self.grad_norm or [0.0]
        return {
            "epochs_run": len(self.train_loss),
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "final_train_loss": self.train_loss[-1] if self.train_loss else None,
            "best_val_loss": min(self.val_loss) if self.val_loss else None,
            "grad_norm_mean": float(np.mean(norms)),
            "grad_norm_max": float(np.max(norms)),
        }


class Checkpointer:
    """Writes ``<dir>/<name>/best.pt`` and ``last.pt``: config, weights and extras.

    Checkpoints hold only tensors and plain data, so they load with
    ``torch.load(weights_only=True)``.
    """

    def __init__(self, cfg: CommonConfig, extras: dict[str, Any]) -> None:
        self.dir = Path(cfg.checkpoint_dir) / cfg.name
        self.cfg = cfg
        self.extras = extras

    def save(self, model: nn.Module, tag: str) -> Path | None:
        """Write ``<tag>.pt`` (rank 0 only under torchrun; other ranks return None)."""
        if not current().is_main:
            return None
        model = unwrap(model)
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{tag}.pt"
        payload = {
            "family": type(self.cfg).__name__,
            "config": to_dict(self.cfg),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "extras": self.extras,
        }
        tmp = path.with_suffix(".tmp")
        torch.save(payload, tmp)
        tmp.replace(path)
        return path


def grad_norm_and_clip(model: nn.Module, clip: float | None) -> float:
    """Total L2 norm of all gradients *before* clipping; clips to `clip` when given."""
    params = [p for p in model.parameters() if p.grad is not None]
    max_norm = clip if clip is not None and clip > 0 else math.inf
    total = nn.utils.clip_grad_norm_(params, max_norm)
    return float(total)


def fit(
    model: nn.Module,
    tensors: tuple[torch.Tensor, ...],
    loss_fn: Callable[[nn.Module, tuple[torch.Tensor, ...]], torch.Tensor],
    val_loss: Callable[[nn.Module], float],
    cfg: CommonConfig,
    *,
    clip_norm: float | None = None,
    checkpointer: Checkpointer | None = None,
    desc: str = "train",
) -> History:
    """Train `model` in place on `tensors` (aligned, on the model's device) with early
    stopping; the best weights are restored.

    Each epoch shuffles `tensors` into mini-batches of ``cfg.batch_size``;
    `loss_fn(model, batch)` returns the scalar loss of one batch (forward propagation);
    `val_loss(model)` is evaluated in eval mode after each epoch. Under torchrun the
    model is wrapped in DistributedDataParallel, each rank trains on its shard of every
    epoch, the validation loss is averaged over the ranks (so early stopping agrees) and
    only rank 0 writes checkpoints and shows progress.
    """
    ctx = current()
    if ctx.enabled:
        batches = sharded_batches(tensors, cfg.batch_size, ctx, cfg.seed)
    else:
        batches = shuffled_batches(tensors, cfg.batch_size, torch.Generator().manual_seed(cfg.seed))
    net = wrap_model(model, ctx)
    opt = make_optimizer(cfg, net.parameters())
    hist = History()
    best = math.inf
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    bad_epochs = 0
    bar = progress(range(cfg.epochs), enabled=cfg.progress and ctx.is_main, desc=desc)
    for epoch in bar:
        net.train()
        losses: list[float] = []
        for batch in batches():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net, batch)
            if not torch.isfinite(loss):
                raise ConfigError(
                    f"training diverged at epoch {epoch + 1} (loss {loss.item()}); lower lr, "
                    "turn on gradient clipping or pick another optimizer"
                )
            loss.backward()
            hist.grad_norm.append(grad_norm_and_clip(net, clip_norm))
            opt.step()
            losses.append(float(loss.detach()))
        net.eval()
        with torch.no_grad():
            v = mean_across_ranks(val_loss(model), ctx)
        hist.train_loss.append(float(np.mean(losses)))
        hist.steps_per_epoch.append(len(losses))
        hist.val_loss.append(v)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(
                loss=f"{hist.train_loss[-1]:.4f}", val=f"{v:.4f}", grad=f"{hist.grad_norm[-1]:.3g}"
            )
        if v < best - 1e-7:
            best, bad_epochs, hist.best_epoch = v, 0, epoch + 1
            best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
            if checkpointer is not None:
                checkpointer.save(model, "best")
        else:
            bad_epochs += 1
        if checkpointer is not None:
            checkpointer.save(model, "last")
        if cfg.patience and bad_epochs >= cfg.patience:
            hist.stopped_early = True
            break
    model.load_state_dict(best_state)
    model.eval()
    return hist
