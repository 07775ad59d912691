"""Recurrent forecasters (RNN / LSTM / GRU) with direct multi-step output.

The exported graph takes the raw series and returns the forecast in the series' own
units: the scaler fitted on the training split lives inside the graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from training.config import CommonConfig, opt
from training.errors import ConfigError

CELLS = ("rnn", "lstm", "gru")
LOSSES = ("mse", "mae", "huber")


@dataclass(frozen=True)
class ForecasterConfig(CommonConfig):
    """Hyper-parameters of a time-series forecaster."""

    name: str = opt("sunspots-lstm", "model name in the repository")
    data: str = opt("sunspots", "'sunspots', 'co2' or the path of a CSV file")
    column: str = opt("", "the CSV column to forecast (CSV data only)")
    cell: str = opt("lstm", "recurrent cell", choices=CELLS)
    layers: int = opt(2, "stacked recurrent layers", min=1)
    hidden_size: int = opt(32, "hidden state size", min=1)
    window: int = opt(24, "input window (history length) used for training", min=2)
    horizon: int = opt(4, "steps predicted at once (direct multi-step)", min=1)
    dropout: float = opt(
        0.1, "dropout between recurrent layers and before the head", min=0.0, max=0.95
    )
    clip_norm: float = opt(1.0, "gradient clipping max norm (0 = off)", min=0.0)
    loss: str = opt("mse", "training loss", choices=LOSSES)
    residual: bool = opt(True, "predict the change from the last observed value")
    epochs: int = opt(150, "maximum number of epochs", min=1)
    batch_size: int = opt(16, "mini-batch size", min=1)
    patience: int = opt(25, "early stopping patience (0 = off)", min=0)
    lr: float = opt(3e-3, "learning rate", min=0.0)
    arima_order: tuple[int, ...] = opt((3, 0, 1), "p,d,q of the ARIMA baseline", min=0)


class Forecaster(nn.Module):
    """``history [B, T]`` (scaled) → recurrent layers → last hidden state →
    linear head → ``[B, horizon]`` (scaled).

    With ``residual`` the head predicts the change from the last value of the window.
    """

    def __init__(self, cfg: ForecasterConfig):
        super().__init__()
        rnn_cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cfg.cell]
        self.rnn: nn.RNNBase = rnn_cls(
            input_size=1,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden_size, cfg.horizon)
        self.residual = cfg.residual

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        seq = history.unsqueeze(-1)  # [B, T, 1]
        out, _ = self.rnn(seq)  # [B, T, H]
        delta = self.head(self.drop(out[:, -1, :]))  # [B, horizon]
        if self.residual:
            return history[:, -1:] + delta
        return delta


def build_forecaster(cfg: ForecasterConfig) -> Forecaster:
    if cfg.cell not in CELLS:
        raise ConfigError(f"cell: unknown value {cfg.cell!r}; valid values: {', '.join(CELLS)}")
    return Forecaster(cfg)


def loss_function(name: str) -> nn.Module:
    """MSE (default), MAE (L1) or Huber."""
    if name == "mse":
        return nn.MSELoss()
    if name == "mae":
        return nn.L1Loss()
    if name == "huber":
        return nn.HuberLoss()
    raise ConfigError(f"loss: unknown value {name!r}; valid values: {', '.join(LOSSES)}")


class ExportedForecaster(nn.Module):
    """What goes into ONNX: ``history [B, T]`` raw units → ``forecast [B, horizon]`` raw units."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: Forecaster, mean: float, std: float):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        scaled = (history - self.mean) / self.std
        return self.net(scaled) * self.std + self.mean
