"""Autoencoder and VAE over flattened sensor windows (registry names "window_ae", "window_vae").

The tabular `AENet` / `VAENet` (edgead/models/autoencoder.py, vae.py) applied to a window of L
standardised rows flattened to L * D values. Scores: window_ae = mean squared reconstruction
error over the window's L * D values; window_vae = SSE(x, decode(mu)) + 0.5 * KL, as the
tabular VAE. A window's score belongs to its last row (edgead/ops/windows.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgead.errors import ConfigError
from edgead.models._windows import WindowNetDetector, validate_window_config
from edgead.models.autoencoder import AENet
from edgead.models.base import register_detector
from edgead.models.vae import VAENet


@dataclass(frozen=True, kw_only=True)
class WindowAEConfig:
    """Window autoencoder settings.

    window / stride: rows per window and rows between scored windows.
    hidden_sizes, latent_dim, dropout: the MLP autoencoder over L * D inputs.
    epochs / patience / val_fraction: training length, early stopping on the last
        val_fraction of the training windows (in time).
    """

    window: int = 20
    stride: int = 1
    hidden_sizes: tuple[int, ...] = (64,)
    latent_dim: int = 16
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-5
    val_fraction: float = 0.0
    patience: int = 0
    dropout: float = 0.2

    def validate(self) -> None:
        """ConfigError on out-of-range values."""
        validate_window_config(self)
        if self.latent_dim < 1 or not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ConfigError(
                f"{type(self).__name__}: need latent_dim >= 1 and positive hidden_sizes; got "
                f"latent_dim={self.latent_dim}, hidden_sizes={self.hidden_sizes}"
            )


@dataclass(frozen=True, kw_only=True)
class WindowVAEConfig(WindowAEConfig):
    """Window VAE settings (as WindowAEConfig, plus kl_weight of the training loss)."""

    latent_dim: int = 8
    kl_weight: float = 1.0
    dropout: float = 0.0


class Flattened(nn.Module):
    """Applies a row network to windows flattened to (B, L * D): forward/loss -> (B,)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Per-window training loss (B,) of standardised windows (B, L, D)."""
        return self.net.loss(x.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-window score (B,) of standardised windows (B, L, D); export-safe."""
        return self.net(x.flatten(1))


@register_detector("window_ae")
class WindowAE(WindowNetDetector):
    """MLP autoencoder over flattened windows; score = window reconstruction MSE."""

    config_cls = WindowAEConfig

    def _build_network(self, length: int, n_features: int) -> nn.Module:
        cfg: WindowAEConfig = self.config
        return Flattened(AENet(length * n_features, cfg.hidden_sizes, cfg.latent_dim, cfg.dropout))


@register_detector("window_vae")
class WindowVAE(WindowNetDetector):
    """VAE over flattened windows; score = SSE (z = mu) + 0.5 * KL."""

    config_cls = WindowVAEConfig

    def _build_network(self, length: int, n_features: int) -> nn.Module:
        cfg: WindowVAEConfig = self.config
        return Flattened(
            VAENet(length * n_features, cfg.hidden_sizes, cfg.latent_dim, cfg.kl_weight)
        )
