"""GAN pipeline: images scaled to (-1, 1) → generator and discriminator trained
adversarially (BCE loss, Adam with beta1 = 0.5) → samples scored by a digits
classifier → ONNX of the generator only (latent [+ label] → image in pixel units).

Each step: the discriminator learns to tell real images (target 1 - smoothing) from
generated ones (target 0); then the generator learns to make the discriminator answer
"real" (target 1) for its images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training import report
from training.data.images import ImageData, load_images
from training.data.split import stratified_split
from training.distributed import current
from training.engine import make_optimizer, progress, seed_everything, train_device
from training.errors import ConfigError
from training.export import spec
from training.models.gan import (
    Discriminator,
    ExportedConditionalGenerator,
    ExportedGenerator,
    GanConfig,
    Generator,
)
from training.onnx_model import OnnxModel
from training.pipelines.common import ExportPlan, report_dir, save_final

CONFIG = GanConfig
Scorer = Callable[[np.ndarray], np.ndarray]  # images [N, C, H, W] → probabilities [N, K]


@dataclass
class GanHistory:
    d_loss: list[float]
    g_loss: list[float]
    d_real: list[float]  # mean D(x) per epoch (probability)
    d_fake: list[float]  # mean D(G(z)) per epoch


def train_gan(
    cfg: GanConfig,
    x: np.ndarray,
    y: np.ndarray,
    shape: tuple[int, int, int],
    n_classes: int,
    value_range: tuple[float, float],
) -> tuple[Generator, GanHistory]:
    """Adversarial training on ``x [N, C, H, W]`` (pixel units) with labels ``y [N]``."""
    seed_everything(cfg.seed)
    device = train_device(cfg)
    gen = Generator(cfg, shape, n_classes).to(device)
    disc = Discriminator(cfg, shape, n_classes).to(device)
    opt_g = make_optimizer(cfg, gen.parameters())
    opt_d = make_optimizer(cfg, disc.parameters())
    bce = nn.BCEWithLogitsLoss()
    lo, hi = value_range
    real_x = torch.from_numpy((x - (hi + lo) / 2) / ((hi - lo) / 2)).float().to(device)
    real_y = torch.from_numpy(y).to(device)
    n = len(real_x)
    hist = GanHistory([], [], [], [])
    rng = torch.Generator().manual_seed(cfg.seed)
    bar = progress(range(cfg.epochs), enabled=cfg.progress, desc=cfg.name)
    for _ in bar:
        sums = np.zeros(4)
        steps = 0
        order = torch.randperm(n, generator=rng)
        for i in range(0, n - cfg.batch_size + 1, cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            xb, yb = real_x[idx], real_y[idx]
            b = len(xb)
            z = torch.randn(b, cfg.latent_size, device=device)
            fake_labels = torch.randint(0, n_classes, (b,), device=device)
            fake = gen(z, fake_labels if cfg.conditional else None)
            # discriminator step: real → 1 - smoothing, fake → 0
            opt_d.zero_grad(set_to_none=True)
            d_real = disc(xb, yb if cfg.conditional else None)
            d_fake = disc(fake.detach(), fake_labels if cfg.conditional else None)
            loss_d = bce(d_real, torch.full_like(d_real, 1.0 - cfg.label_smoothing)) + bce(
                d_fake, torch.zeros_like(d_fake)
            )
            loss_d.backward()
            opt_d.step()
            # generator step: make the discriminator say "real"
            opt_g.zero_grad(set_to_none=True)
            d_gen = disc(fake, fake_labels if cfg.conditional else None)
            loss_g = bce(d_gen, torch.ones_like(d_gen))
            loss_g.backward()
            opt_g.step()
            sums += [
                float(loss_d.detach()),
                float(loss_g.detach()),
                float(torch.sigmoid(d_real.detach()).mean()),
                float(torch.sigmoid(d_fake.detach()).mean()),
            ]
            steps += 1
        if steps == 0:
            raise ConfigError(f"batch_size: {cfg.batch_size} is larger than the {n} images")
        d, g, dr, df = sums / steps
        hist.d_loss.append(d)
        hist.g_loss.append(g)
        hist.d_real.append(dr)
        hist.d_fake.append(df)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(d=f"{d:.3f}", g=f"{g:.3f}")
    gen.eval().cpu()
    return gen, hist


def sample(
    gen: Generator, cfg: GanConfig, labels: np.ndarray, seed: int, value_range: tuple[float, float]
) -> np.ndarray:
    """Images ``[N, C, H, W]`` in pixel units, latents drawn as the services draw them."""
    z = np.random.default_rng(seed).standard_normal(
        (len(labels), cfg.latent_size), dtype=np.float32
    )
    wrapper = _wrap(gen, cfg, value_range).eval()
    with torch.no_grad():
        if cfg.conditional:
            out = wrapper(torch.from_numpy(z), torch.from_numpy(labels.astype(np.int64)))
        else:
            out = wrapper(torch.from_numpy(z))
    result: np.ndarray = out.numpy()
    return result


def _wrap(gen: Generator, cfg: GanConfig, value_range: tuple[float, float]) -> nn.Module:
    if cfg.conditional:
        return ExportedConditionalGenerator(gen, value_range)
    return ExportedGenerator(gen, value_range)


def score(probs: np.ndarray, asked: np.ndarray | None = None) -> dict[str, Any]:
    """Share of samples classified with probability ≥ 0.9, entropy (nats) of the
    predicted-class histogram, classes present, and for conditional samples the share
    predicted as the class that was asked for."""
    pred = probs.argmax(1)
    counts = np.bincount(pred, minlength=probs.shape[1])
    share = counts / counts.sum()
    nz = share[share > 0]
    out: dict[str, Any] = {
        "confident_share": float((probs.max(1) >= 0.9).mean()),
        "class_entropy": float(-(nz * np.log(nz)).sum()),
        "max_entropy": float(np.log(probs.shape[1])),
        "classes_present": int((counts > 0).sum()),
        "samples": len(probs),
    }
    if asked is not None:
        out["label_match"] = float((pred == asked).mean())
    return out


def load_scorer(cfg: GanConfig, models_dir: Path, data: ImageData) -> tuple[Scorer, str]:
    """The digits classifier used to score samples: ``cfg.scorer``, else the published
    ``<models_dir>/digits-cnn``, else a default classifier trained now."""
    path = Path(cfg.scorer) if cfg.scorer else models_dir / "digits-cnn"
    if cfg.scorer or path.is_dir():
        model = OnnxModel(path)
        if model.meta.get("task") != "classify":
            raise ConfigError(f"scorer: {model.dir} is not a classifier")
        return (
            lambda x: model.run("probabilities", {"image": x.astype(np.float32)}),
            str(model.dir),
        )
    from training.models.classifier import ClassifierConfig
    from training.pipelines.classify import train_once

    trained = train_once(
        ClassifierConfig(
            name=f"{cfg.name}-scorer", progress=False, checkpoint_dir=cfg.checkpoint_dir
        ),
        data,
        checkpoint=False,
    )

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            result: np.ndarray = trained.model(torch.from_numpy(x.astype(np.float32)))[1].numpy()
        return result

    return run, "default classifier trained for scoring"


def train(cfg: GanConfig, models_dir: Path) -> Path:
    """Run the whole pipeline; returns the final checkpoint's path."""
    if current().enabled:
        raise ConfigError(
            "gan: distributed (torchrun) training is supported for the classifier and the "
            "forecaster; train the GAN with one process (--nproc-per-node=1 or plain axon train)"
        )
    if len(cfg.image_size) != 2:
        raise ConfigError(f"image_size: give H,W (two numbers); got {cfg.image_size}")
    data = load_images(cfg.data, (cfg.image_size[0], cfg.image_size[1]), cfg.channels)
    tr, _, te = stratified_split(data.y, 0.0, cfg.test_fraction, cfg.seed)
    k = len(data.labels)
    gen, hist = train_gan(cfg, data.x[tr], data.y[tr], data.shape, k, data.value_range)
    scorer, scorer_name = load_scorer(cfg, models_dir, data)
    labels = np.arange(cfg.eval_samples, dtype=np.int64) % k
    samples = sample(gen, cfg, labels, cfg.seed + 1, data.value_range)
    seed_everything(cfg.seed + 1)
    untrained = Generator(cfg, data.shape, k).eval()
    asked = labels if cfg.conditional else None
    metrics: dict[str, Any] = {
        "scorer": scorer_name,
        "generated": score(scorer(samples), asked),
        "real_held_out": score(scorer(data.x[te])),
        "untrained_generator": score(
            scorer(sample(untrained, cfg, labels, cfg.seed + 1, data.value_range)), asked
        ),
        "final_d_loss": hist.d_loss[-1],
        "final_g_loss": hist.g_loss[-1],
        "epochs_run": len(hist.d_loss),
    }
    metrics["confident_share"] = metrics["generated"]["confident_share"]
    metrics["classes_present"] = metrics["generated"]["classes_present"]
    rdir = report_dir(cfg)
    report.loss_curves(
        {"discriminator": hist.d_loss, "generator": hist.g_loss},
        rdir / "loss.png",
        f"{cfg.name}: adversarial BCE",
    )
    grid_labels = np.repeat(np.arange(min(k, 10)), 10) if cfg.conditional else np.zeros(100, int)
    report.image_grid(
        sample(gen, cfg, grid_labels.astype(np.int64), cfg.seed + 2, data.value_range),
        rdir / "samples.png",
        f"{cfg.name}: one row per class" if cfg.conditional else cfg.name,
    )
    extras = {
        "meta": {
            "task": "generate",
            "architecture": "dcgan",
            "latent_size": cfg.latent_size,
            "conditional": cfg.conditional,
            "num_classes": k if cfg.conditional else 0,
            "labels": list(data.labels),
            "image": data.image_meta(),
            "dataset": data.dataset_meta(len(tr), 0, len(te)),
            "metrics": metrics,
        },
        "shape": list(data.shape),
        "n_classes": k,
        "value_range": list(data.value_range),
    }
    return save_final(cfg, gen.state_dict(), extras)


def export_plan(
    cfg: GanConfig, state_dict: dict[str, torch.Tensor], extras: dict[str, Any]
) -> ExportPlan:
    """Rebuild the generator; its ONNX takes latent (+ label) and returns pixel images."""
    c, h, w = extras["shape"]
    k = int(extras["n_classes"])
    gen = Generator(cfg, (c, h, w), k)
    gen.load_state_dict(state_dict)
    module = _wrap(gen.eval(), cfg, tuple(extras["value_range"])).eval()
    rng = torch.Generator().manual_seed(0)
    z = cfg.latent_size

    def feeds(b: int) -> dict[str, torch.Tensor]:
        out = {"latent": torch.randn(b, z, generator=rng)}
        if cfg.conditional:
            out["label"] = torch.randint(0, k, (b,), generator=rng)
        return out

    inputs = [spec("latent", np.float32, [-1, z])]
    if cfg.conditional:
        inputs.append(spec("label", np.int64, [-1]))
    return ExportPlan(
        module=module,
        example=feeds(3),
        inputs=inputs,
        outputs=[spec("image", np.float32, [-1, c, h, w])],
        cases=[feeds(b) for b in (1, 4, 25)],
    )
