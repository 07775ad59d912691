"""Network shapes, and every option really changes the network."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from training.config import apply_overrides
from training.engine import grad_norm_and_clip, make_optimizer
from training.errors import ConfigError
from training.models.classifier import (
    ClassifierConfig,
    ExportedClassifier,
    Normalize,
    build_classifier,
)
from training.models.forecaster import ExportedForecaster, ForecasterConfig, build_forecaster
from training.models.gan import Discriminator, GanConfig, Generator

SHAPE = (1, 8, 8)


def layers(m: nn.Module) -> list[type[nn.Module]]:
    return [type(x) for x in m.modules()]


def cls(**kw: object) -> nn.Module:
    return build_classifier(apply_overrides(ClassifierConfig(), kw, "t"), SHAPE, 10)


@pytest.mark.parametrize("arch", ["cnn", "mlp", "perceptron"])
def test_classifier_shapes(arch: str) -> None:
    net = ExportedClassifier(cls(arch=arch), Normalize(5.0, 6.0)).eval()
    logits, probs = net(torch.rand(3, *SHAPE) * 16)
    assert logits.shape == (3, 10) and probs.shape == (3, 10)
    assert torch.allclose(probs.sum(1), torch.ones(3), atol=1e-5)


def test_classifier_options_change_the_network() -> None:
    assert nn.Conv2d in layers(cls(arch="cnn")) and nn.Conv2d not in layers(cls(arch="mlp"))
    assert [t for t in layers(cls(arch="perceptron")) if t is nn.Linear] == [nn.Linear]
    for name, typ in (("relu", nn.ReLU), ("sigmoid", nn.Sigmoid), ("tanh", nn.Tanh)):
        assert typ in layers(cls(activation=name))
    assert nn.MaxPool2d in layers(cls(pool="max"))
    assert nn.AvgPool2d in layers(cls(pool="avg"))
    assert not {nn.MaxPool2d, nn.AvgPool2d} & set(layers(cls(pool="none")))
    assert nn.BatchNorm2d in layers(cls(batch_norm=True))
    assert nn.BatchNorm2d not in layers(cls(batch_norm=False))
    drops = [m.p for m in cls(dropout=0.4).modules() if isinstance(m, nn.Dropout)]
    assert drops and all(p == 0.4 for p in drops)
    convs = [
        m
        for m in cls(
            conv_channels="8,16,24",
            kernel_size="5,3,3",
            stride="1,2,1",
            padding="2,1,1",
            pool_every="0,0,0",
        ).modules()
        if isinstance(m, nn.Conv2d)
    ]
    assert [c.out_channels for c in convs] == [8, 16, 24]
    assert [c.kernel_size for c in convs] == [(5, 5), (3, 3), (3, 3)]
    assert [c.stride for c in convs] == [(1, 1), (2, 2), (1, 1)]
    # stride 2 halves 8x8 to 4x4: the head's input is 24 * 4 * 4
    head = [
        m
        for m in cls(
            conv_channels="8,16,24",
            kernel_size="5,3,3",
            stride="1,2,1",
            padding="2,1,1",
            pool_every="0,0,0",
        ).modules()
        if isinstance(m, nn.Linear)
    ]
    assert head[0].in_features == 24 * 4 * 4
    widths = [
        m.out_features
        for m in cls(arch="mlp", hidden="64,32").modules()
        if isinstance(m, nn.Linear)
    ]
    assert widths == [64, 32, 10]


def test_conv_that_shrinks_to_nothing_is_refused() -> None:
    with pytest.raises(ConfigError, match="shrinks the 8x8 image"):
        cls(conv_channels="8,8,8", kernel_size="3", stride="4", padding="0", pool_every="1")
    with pytest.raises(ConfigError, match="kernel_size: give one value or one per conv block"):
        cls(conv_channels="8,8,8", kernel_size="3,3")


@pytest.mark.parametrize("cell,typ", [("rnn", nn.RNN), ("lstm", nn.LSTM), ("gru", nn.GRU)])
def test_forecaster_cells_and_shapes(cell: str, typ: type[nn.Module]) -> None:
    cfg = replace(ForecasterConfig(), cell=cell, layers=3, hidden_size=12, horizon=5)
    net = build_forecaster(cfg)
    assert isinstance(net.rnn, typ)
    assert net.rnn.num_layers == 3 and net.rnn.hidden_size == 12
    out = ExportedForecaster(net, 10.0, 2.0).eval()(torch.randn(4, 17))
    assert out.shape == (4, 5)


def test_residual_forecaster_starts_from_last_value() -> None:
    torch.manual_seed(0)
    cfg = replace(ForecasterConfig(), residual=True, dropout=0.0)
    net = build_forecaster(cfg).eval()
    nn.init.zeros_(net.head.weight)
    nn.init.zeros_(net.head.bias)
    x = torch.randn(2, 10)
    assert torch.allclose(net(x), x[:, -1:].expand(2, cfg.horizon))
    plain = build_forecaster(replace(cfg, residual=False)).eval()
    nn.init.zeros_(plain.head.weight)
    nn.init.zeros_(plain.head.bias)
    assert torch.count_nonzero(plain(x)) == 0


@pytest.mark.parametrize("conditional", [True, False])
def test_gan_shapes(conditional: bool) -> None:
    cfg = replace(GanConfig(), conditional=conditional, latent_size=6)
    gen, disc = Generator(cfg, SHAPE, 10), Discriminator(cfg, SHAPE, 10)
    labels = torch.tensor([0, 3, 9]) if conditional else None
    img = gen(torch.randn(3, 6), labels)
    assert img.shape == (3, *SHAPE) and img.abs().max() <= 1.0
    assert disc(img, labels).shape == (3,)
    assert (gen.embed is not None) == conditional


def test_gan_needs_power_of_two_images() -> None:
    with pytest.raises(ConfigError, match="power-of-two"):
        Generator(GanConfig(), (1, 12, 12), 10)


def test_optimizers_and_weight_decay() -> None:
    params = list(nn.Linear(2, 2).parameters())
    for name, typ in (
        ("sgd", torch.optim.SGD),
        ("adam", torch.optim.Adam),
        ("rmsprop", torch.optim.RMSprop),
    ):
        cfg = replace(ClassifierConfig(), optimizer=name, weight_decay=0.01, lr=0.5)
        opt = make_optimizer(cfg, params)
        assert isinstance(opt, typ)
        assert opt.param_groups[0]["weight_decay"] == 0.01
        assert opt.param_groups[0]["lr"] == 0.5


def test_gradient_clipping_reports_norm_before_clipping() -> None:
    lin = nn.Linear(3, 1)
    (lin(torch.full((1, 3), 100.0)).sum() * 100).backward()
    before = grad_norm_and_clip(lin, clip=1.0)
    after = torch.sqrt(sum((p.grad**2).sum() for p in lin.parameters() if p.grad is not None))
    assert before > 1.0
    assert float(after) == pytest.approx(1.0, rel=1e-4)


def test_threads_option_sets_torch_threads() -> None:
    from training.engine import train_device

    before = torch.get_num_threads()
    try:
        assert train_device(replace(ClassifierConfig(), threads=1, device="cpu")).type == "cpu"
        assert torch.get_num_threads() == 1
        train_device(replace(ClassifierConfig(), threads=2, device="cpu"))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
