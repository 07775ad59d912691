"""Image classifier pipeline: data → CNN/MLP/perceptron → cross-entropy training with
early stopping → test accuracy + confusion matrix → ONNX (normalisation and softmax
inside the graph).

With ``augment_generator`` set, the classifier is trained twice with the same seed:
once on the real training set, once with generated labelled samples mixed in; both
test accuracies are reported and the augmented model is the one exported.
"""

from __future__ import annotations

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
from training.engine import Checkpointer, History, fit, seed_everything, train_device
from training.errors import ConfigError, DataError
from training.export import spec
from training.models.classifier import (
    ClassifierConfig,
    ExportedClassifier,
    Normalize,
    build_classifier,
)
from training.onnx_model import OnnxModel, generate
from training.pipelines.common import ExportPlan, report_dir, run_dir, save_final

CONFIG = ClassifierConfig


@dataclass
class Trained:
    """A trained classifier wrapped for export, with its test figures."""

    model: ExportedClassifier
    history: History
    accuracy: float
    confusion: np.ndarray


def _split(data: ImageData, cfg: ClassifierConfig) -> tuple[np.ndarray, ...]:
    return stratified_split(data.y, cfg.val_fraction, cfg.test_fraction, cfg.seed)


def train_once(
    cfg: ClassifierConfig,
    data: ImageData,
    extra: tuple[np.ndarray, np.ndarray] | None = None,
    checkpoint: bool = True,
) -> Trained:
    """Train one classifier; `extra` (``x [M, C, H, W]``, ``y [M]``) joins the training set."""
    seed_everything(cfg.seed)
    device = train_device(cfg)
    tr, va, te = _split(data, cfg)
    x_tr, y_tr = data.x[tr], data.y[tr]
    if extra is not None:
        x_tr, y_tr = np.concatenate([x_tr, extra[0]]), np.concatenate([y_tr, extra[1]])
    mean, std = float(data.x[tr].mean()), float(data.x[tr].std() or 1.0)
    norm = Normalize(mean, std)
    net = build_classifier(cfg, data.shape, len(data.labels))
    model = ExportedClassifier(net, norm).to(device)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(device)

    xv, yv = t(data.x[va]), t(data.y[va])
    ce = nn.CrossEntropyLoss()

    def loss_fn(m: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        logits, _ = m(batch[0])
        return ce(logits, batch[1])

    def val_loss(m: nn.Module) -> float:
        if len(xv) == 0:
            return 0.0
        return float(ce(m(xv)[0], yv))

    hist = fit(
        model,
        (t(x_tr), t(y_tr)),
        loss_fn,
        val_loss,
        cfg,
        checkpointer=Checkpointer(cfg, {}) if checkpoint else None,
        desc=cfg.name,
    )
    model = model.cpu().eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(data.x[te]))[1].argmax(1).numpy()
    truth = data.y[te]
    k = len(data.labels)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (truth, pred), 1)
    return Trained(model, hist, float((pred == truth).mean()), matrix)


def generated_samples(
    path: str, data: ImageData, n: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """`n` labelled samples from a published conditional generator, classes in turn."""
    gen = OnnxModel(Path(path))
    meta = gen.meta
    if not meta.get("conditional"):
        raise ConfigError(
            f"augment_generator: {gen.dir} is not class-conditional, so its samples have no "
            "labels; train one with conditional = true"
        )
    img = meta["image"]
    if (img["channels"], img["height"], img["width"]) != data.shape:
        raise DataError(
            f"augment_generator: {gen.dir} makes {img['channels']}x{img['height']}x"
            f"{img['width']} images but the data is {'x'.join(map(str, data.shape))}"
        )
    if int(meta["num_classes"]) != len(data.labels):
        raise DataError(
            f"augment_generator: {gen.dir} knows {meta['num_classes']} classes, the data has "
            f"{len(data.labels)}"
        )
    labels = np.arange(n, dtype=np.int64) % len(data.labels)
    return generate(gen, labels, seed).astype(np.float32), labels


def train(cfg: ClassifierConfig, models_dir: Path) -> Path:
    """Run the whole pipeline; returns the final checkpoint's path."""
    data = load_images(cfg.data, _image_size(cfg), cfg.channels)
    metrics: dict[str, Any] = {}
    extra = None
    if cfg.augment_generator:
        extra = generated_samples(cfg.augment_generator, data, cfg.augment_samples, cfg.seed)
        baseline = train_once(cfg, data, checkpoint=False)
        metrics["accuracy_without_augmentation"] = baseline.accuracy
    result = train_once(cfg, data, extra)
    if not current().is_main:  # under torchrun only rank 0 reports and writes final.pt
        return run_dir(cfg) / "final.pt"
    metrics["accuracy"] = result.accuracy
    if extra is not None:
        metrics["accuracy_with_augmentation"] = result.accuracy
        metrics["augmented_samples"] = len(extra[1])
    metrics["confusion_matrix"] = result.confusion.tolist()
    metrics["training"] = result.history.summary()
    rdir = report_dir(cfg)
    report.loss_curves(
        {"train": result.history.train_loss, "validation": result.history.val_loss},
        rdir / "loss.png",
        f"{cfg.name}: cross-entropy",
    )
    report.confusion(result.confusion, data.labels, rdir / "confusion.png")
    tr, va, te = _split(data, cfg)
    extras = {
        "meta": {
            "task": "classify",
            "architecture": cfg.arch,
            "labels": list(data.labels),
            "image": data.image_meta(),
            "dataset": data.dataset_meta(len(tr), len(va), len(te)),
            "metrics": metrics,
        },
        "shape": list(data.shape),
        "n_classes": len(data.labels),
        "norm": [float(result.model.norm.mean), float(result.model.norm.std)],
    }
    return save_final(cfg, result.model.state_dict(), extras)


def _image_size(cfg: ClassifierConfig) -> tuple[int, int]:
    if len(cfg.image_size) != 2:
        raise ConfigError(f"image_size: give H,W (two numbers); got {cfg.image_size}")
    return cfg.image_size[0], cfg.image_size[1]


def export_plan(
    cfg: ClassifierConfig, state_dict: dict[str, torch.Tensor], extras: dict[str, Any]
) -> ExportPlan:
    """Rebuild the network from a checkpoint and describe its ONNX signature."""
    c, h, w = extras["shape"]
    k = int(extras["n_classes"])
    model = ExportedClassifier(build_classifier(cfg, (c, h, w), k), Normalize(*extras["norm"]))
    model.load_state_dict(state_dict)
    hi = float(extras["meta"]["image"]["value_range"][1])
    gen = torch.Generator().manual_seed(0)

    def images(b: int) -> dict[str, torch.Tensor]:
        return {"image": torch.rand(b, c, h, w, generator=gen) * hi}

    return ExportPlan(
        module=model.eval(),
        example=images(2),
        inputs=[spec("image", np.float32, [-1, c, h, w])],
        outputs=[spec("logits", np.float32, [-1, k]), spec("probabilities", np.float32, [-1, k])],
        cases=[images(b) for b in (1, 5, 33)],
    )
