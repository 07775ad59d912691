"""Image classifiers: a configurable CNN, an MLP ("deep neural network") and a
single-layer perceptron baseline, plus the export wrapper that bakes normalisation
and softmax into the graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from training.config import CommonConfig, opt
from training.errors import ConfigError

ARCHS = ("cnn", "mlp", "perceptron")
ACTIVATIONS = ("relu", "sigmoid", "tanh")
POOLS = ("max", "avg", "none")


@dataclass(frozen=True)
class ClassifierConfig(CommonConfig):
    """Hyper-parameters of an image classifier (cross-entropy loss)."""

    name: str = opt("digits-cnn", "model name in the repository")
    data: str = opt("digits", "'digits' or a folder with one sub-folder of images per class")
    image_size: tuple[int, ...] = opt((32, 32), "H,W images of a folder are resized to")
    channels: int = opt(1, "1 = greyscale, 3 = RGB (image folders)", min=1, max=3)
    arch: str = opt("cnn", "network", choices=ARCHS)
    conv_channels: tuple[int, ...] = opt((32, 64), "output channels of each conv block", min=1)
    kernel_size: tuple[int, ...] = opt((3, 3), "filter size of each conv block", min=1)
    stride: tuple[int, ...] = opt((1, 1), "stride of each conv block", min=1)
    padding: tuple[int, ...] = opt((1, 1), "zero padding of each conv block", min=0)
    pool: str = opt("max", "pooling after each conv block", choices=POOLS)
    pool_size: int = opt(2, "pooling window and stride", min=1)
    pool_every: tuple[int, ...] = opt((0, 1), "1 = pool after this conv block, 0 = not")
    activation: str = opt("relu", "activation function", choices=ACTIVATIONS)
    hidden: tuple[int, ...] = opt((128,), "hidden layer widths (MLP, and the CNN head)", min=1)
    dropout: float = opt(0.25, "dropout probability before each dense layer", min=0.0, max=0.95)
    batch_norm: bool = opt(True, "batch normalisation after each conv / hidden layer")
    epochs: int = opt(40, "maximum number of epochs", min=1)
    patience: int = opt(10, "early stopping patience (0 = off)", min=0)
    lr: float = opt(2e-3, "learning rate", min=0.0)
    augment_generator: str = opt(
        "",
        "a conditional generator's model dir (…/digits-gan or …/digits-gan/1) to mix "
        "generated, labelled samples into the training set; '' = off",
    )
    augment_samples: int = opt(500, "how many generated samples to add", min=0)


def activation(name: str) -> nn.Module:
    """ReLU(x) = max(0, x); sigmoid in (0, 1); tanh in (-1, 1)."""
    if name == "relu":
        return nn.ReLU()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "tanh":
        return nn.Tanh()
    raise ConfigError(f"activation: unknown value {name!r}; valid values: {', '.join(ACTIVATIONS)}")


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _per_block(cfg: ClassifierConfig, name: str, n: int) -> tuple[int, ...]:
    values: tuple[int, ...] = getattr(cfg, name)
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise ConfigError(
            f"{name}: give one value or one per conv block ({n} blocks from conv_channels); "
            f"got {len(values)}"
        )
    return values


def _dense_stack(in_features: int, cfg: ClassifierConfig, n_classes: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = in_features
    for h in cfg.hidden:
        layers += [nn.Dropout(cfg.dropout), nn.Linear(width, h)]
        if cfg.batch_norm:
            layers.append(nn.BatchNorm1d(h))
        layers.append(activation(cfg.activation))
        width = h
    layers += [nn.Dropout(cfg.dropout), nn.Linear(width, n_classes)]
    return nn.Sequential(*layers)


class ConvNet(nn.Module):
    """Conv blocks (conv → [BN] → act → [pool]) then a dense head.

    Shapes: ``[B, C, H, W]`` → conv blocks → ``[B, C_last, H', W']`` → flatten →
    ``[B, C_last·H'·W']`` → hidden layers → ``[B, K]`` logits.
    """

    def __init__(self, cfg: ClassifierConfig, in_shape: tuple[int, int, int], n_classes: int):
        super().__init__()
        n = len(cfg.conv_channels)
        kernels = _per_block(cfg, "kernel_size", n)
        strides = _per_block(cfg, "stride", n)
        paddings = _per_block(cfg, "padding", n)
        pools = _per_block(cfg, "pool_every", n)
        c, h, w = in_shape
        blocks: list[nn.Module] = []
        for i, out_c in enumerate(cfg.conv_channels):
            blocks.append(nn.Conv2d(c, out_c, kernels[i], strides[i], paddings[i]))
            h, w = (_conv_out(s, kernels[i], strides[i], paddings[i]) for s in (h, w))
            if cfg.batch_norm:
                blocks.append(nn.BatchNorm2d(out_c))
            blocks.append(activation(cfg.activation))
            if cfg.pool != "none" and pools[i]:
                pool_cls = nn.MaxPool2d if cfg.pool == "max" else nn.AvgPool2d
                blocks.append(pool_cls(cfg.pool_size))
                h, w = h // cfg.pool_size, w // cfg.pool_size
            if h < 1 or w < 1:
                raise ConfigError(
                    f"conv block {i + 1} shrinks the {in_shape[1]}x{in_shape[2]} image to "
                    f"nothing; lower stride/kernel_size/pooling or add padding"
                )
            c = out_c
        self.features = nn.Sequential(*blocks)
        self.head = _dense_stack(c * h * w, cfg, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


class MLP(nn.Module):
    """A deep (fully connected) network: flatten → hidden layers → ``[B, K]`` logits."""

    def __init__(self, cfg: ClassifierConfig, in_shape: tuple[int, int, int], n_classes: int):
        super().__init__()
        c, h, w = in_shape
        self.net = _dense_stack(c * h * w, cfg, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.flatten(x, 1))


class Perceptron(nn.Module):
    """Single layer: inputs → weights → sum (+bias) → ``[B, K]`` scores (softmax outside)."""

    def __init__(self, in_shape: tuple[int, int, int], n_classes: int):
        super().__init__()
        c, h, w = in_shape
        self.linear = nn.Linear(c * h * w, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(x, 1))


def build_classifier(
    cfg: ClassifierConfig, in_shape: tuple[int, int, int], n_classes: int
) -> nn.Module:
    """The network named by ``cfg.arch``, taking normalised ``[B, C, H, W]`` input."""
    if cfg.arch == "cnn":
        return ConvNet(cfg, in_shape, n_classes)
    if cfg.arch == "mlp":
        return MLP(cfg, in_shape, n_classes)
    if cfg.arch == "perceptron":
        return Perceptron(in_shape, n_classes)
    raise ConfigError(f"arch: unknown value {cfg.arch!r}; valid values: {', '.join(ARCHS)}")


class Normalize(nn.Module):
    """``(x - mean) / std`` with constants stored in the graph."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ExportedClassifier(nn.Module):
    """What goes into ONNX: raw pixels ``image [B, C, H, W]`` →
    (``logits [B, K]``, ``probabilities [B, K]``)."""

    def __init__(self, net: nn.Module, norm: Normalize):
        super().__init__()
        self.norm = norm
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(self.norm(image))
        return logits, torch.softmax(logits, dim=1)
