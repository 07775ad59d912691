"""A DCGAN-style generator/discriminator pair, optionally class-conditional.

The generator maps a latent vector (plus a class label when conditional) to an image;
the discriminator maps an image (plus the label) to one logit "real vs fake". Only the
generator is exported, with its output rescaled to the dataset's pixel range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from training.config import CommonConfig, opt
from training.errors import ConfigError


@dataclass(frozen=True)
class GanConfig(CommonConfig):
    """Hyper-parameters of a (conditional) DCGAN trained with the BCE adversarial loss."""

    name: str = opt("digits-gan", "model name in the repository")
    data: str = opt("digits", "'digits' or a folder with one sub-folder of images per class")
    image_size: tuple[int, ...] = opt(
        (16, 16), "H,W images of a folder are resized to (powers of two, at least 8)"
    )
    channels: int = opt(1, "1 = greyscale, 3 = RGB (image folders)", min=1, max=3)
    conditional: bool = opt(True, "condition both networks on the class label")
    latent_size: int = opt(32, "size of the latent vector", min=1)
    gen_features: int = opt(64, "base feature maps of the generator", min=4)
    disc_features: int = opt(32, "base feature maps of the discriminator", min=4)
    label_smoothing: float = opt(0.1, "one-sided label smoothing of real targets", min=0.0, max=0.5)
    optimizer: str = opt(
        "adam", "optimizer (DCGAN uses Adam with beta1 = 0.5)", choices=("sgd", "adam", "rmsprop")
    )
    beta1: float = opt(0.5, "Adam beta1", min=0.0, max=1.0)
    lr: float = opt(2e-4, "learning rate of both networks", min=0.0)
    epochs: int = opt(120, "epochs over the training images", min=1)
    batch_size: int = opt(64, "mini-batch size", min=2)
    patience: int = opt(0, "unused by GANs (no validation loss to watch)", min=0)
    scorer: str = opt(
        "",
        "digits classifier model dir used to score samples "
        "('' = <models-dir>/digits-cnn, trained on the fly if missing)",
    )
    eval_samples: int = opt(1000, "samples scored by the classifier", min=10)


def _upsamples(height: int, width: int) -> int:
    if height != width or height < 8 or 2 ** round(math.log2(height)) != height:
        raise ConfigError(
            f"image_size: the GAN needs square power-of-two images of at least 8x8; "
            f"got {height}x{width}"
        )
    return int(math.log2(height)) - 2


class Generator(nn.Module):
    """``z [B, Z]`` (+ ``label [B]``) → linear → ``[B, F·2^k, 4, 4]`` → k transposed convs
    (×2 each) → conv → tanh → ``[B, C, H, W]`` in (-1, 1)."""

    def __init__(self, cfg: GanConfig, shape: tuple[int, int, int], n_classes: int):
        super().__init__()
        c, h, w = shape
        ups = _upsamples(h, w)
        self.conditional = cfg.conditional
        self.embed = nn.Embedding(n_classes, cfg.latent_size) if cfg.conditional else None
        in_features = cfg.latent_size * (2 if cfg.conditional else 1)
        width = cfg.gen_features * 2**ups
        self.project = nn.Sequential(
            nn.Linear(in_features, width * 16), nn.BatchNorm1d(width * 16), nn.ReLU()
        )
        self.width = width
        layers: list[nn.Module] = []
        for _ in range(ups):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(),
            ]
            width //= 2
        layers += [nn.Conv2d(width, c, 3, 1, 1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            if label is None:
                raise ValueError("a conditional generator needs labels")
            z = torch.cat([z, self.embed(label)], dim=1)  # [B, 2Z]
        x = self.project(z).view(-1, self.width, 4, 4)
        return self.body(x)


class Discriminator(nn.Module):
    """``image [B, C, H, W]`` in (-1, 1) (+ label as an extra plane) → strided convs
    (÷2 each, LeakyReLU) → ``[B, F', 4, 4]`` → linear → ``[B]`` logits."""

    def __init__(self, cfg: GanConfig, shape: tuple[int, int, int], n_classes: int):
        super().__init__()
        c, h, w = shape
        downs = _upsamples(h, w)
        self.h, self.w = h, w
        self.embed = nn.Embedding(n_classes, h * w) if cfg.conditional else None
        in_c = c + (1 if cfg.conditional else 0)
        width = cfg.disc_features
        layers: list[nn.Module] = [nn.Conv2d(in_c, width, 3, 1, 1), nn.LeakyReLU(0.2)]
        for _ in range(downs):
            layers += [
                nn.Conv2d(width, width * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width * 2),
                nn.LeakyReLU(0.2),
            ]
            width *= 2
        self.body = nn.Sequential(*layers)
        self.out = nn.Sequential(nn.Dropout(0.3), nn.Linear(width * 16, 1))

    def forward(self, image: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            if label is None:
                raise ValueError("a conditional discriminator needs labels")
            plane = self.embed(label).view(-1, 1, self.h, self.w)
            image = torch.cat([image, plane], dim=1)
        return self.out(torch.flatten(self.body(image), 1)).squeeze(1)


class _ToPixels(nn.Module):
    """(-1, 1) → the dataset's pixel range ``[lo, hi]``."""

    def __init__(self, value_range: tuple[float, float]):
        super().__init__()
        lo, hi = value_range
        self.scale = (hi - lo) / 2.0
        self.offset = (hi + lo) / 2.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset


class ExportedConditionalGenerator(nn.Module):
    """ONNX: ``latent [B, Z]``, ``label [B] int64`` → ``image [B, C, H, W]`` in pixel units."""

    def __init__(self, gen: Generator, value_range: tuple[float, float]):
        super().__init__()
        self.gen = gen
        self.pixels = _ToPixels(value_range)

    def forward(self, latent: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self.pixels(self.gen(latent, label))


class ExportedGenerator(nn.Module):
    """ONNX: ``latent [B, Z]`` → ``image [B, C, H, W]`` in pixel units."""

    def __init__(self, gen: Generator, value_range: tuple[float, float]):
        super().__init__()
        self.gen = gen
        self.pixels = _ToPixels(value_range)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.pixels(self.gen(latent))
