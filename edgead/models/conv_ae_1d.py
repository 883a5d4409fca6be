"""1-D convolutional autoencoder over sensor windows (registry name "conv_ae_1d").

The shape of SKAB's Conv-AE: Conv1d(D -> c1, k, stride 2) -> ReLU -> Dropout ->
Conv1d(c1 -> c2, k, stride 2) -> ReLU, and a mirrored ConvTranspose1d decoder ending in a
Conv1d back to D channels, over a window of L standardised rows (time is the conv axis).
L must be a multiple of 4 (two stride-2 stages). Score, over the last `score_rows` rows of the
window (all L when 0), in squared training standard deviations: "mean" = the mean squared
reconstruction error over rows and features; "max_feature" = the largest per-feature mean
squared error (one sensor going wrong is not diluted by the seven that are fine). A window's
score belongs to its last row (edgead/ops/windows.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgead.errors import ConfigError
from edgead.models._windows import (
    WINDOW_SCORES,
    WindowNetDetector,
    validate_window_config,
    window_score,
)
from edgead.models.base import register_detector


@dataclass(frozen=True, kw_only=True)
class ConvAE1dConfig:
    """1-D conv autoencoder settings.

    window / stride: rows per window (a multiple of 4) and rows between scored windows.
    channels: (c1, c2) of the two encoder stages; kernel: odd kernel size (rows).
    score_rows: rows at the end of the window whose error is the score (0 = all L).
    score: "mean" (MSE over rows and features) or "max_feature" (largest per-feature MSE).

    Defaults (window 40, max_feature) come from SKAB valve1 (benchmarks/skab.md): window 20 /
    40 and mean / max_feature were compared there, so that benchmark is not a blind test.
    """

    window: int = 40
    stride: int = 1
    channels: tuple[int, int] = (32, 16)
    kernel: int = 7
    score_rows: int = 0
    score: str = "max_feature"
    dropout: float = 0.2
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    val_fraction: float = 0.0
    patience: int = 0

    def validate(self) -> None:
        """ConfigError on out-of-range values."""
        validate_window_config(self)
        ok = (
            self.window % 4 == 0
            and self.kernel >= 1
            and self.kernel % 2 == 1
            and len(self.channels) == 2
            and min(self.channels) >= 1
            and 0 <= self.score_rows <= self.window
            and self.score in WINDOW_SCORES
        )
        if not ok:
            raise ConfigError(
                f"ConvAE1dConfig: need window a multiple of 4, an odd kernel, two positive "
                f"channels, 0 <= score_rows <= window and score in {WINDOW_SCORES}; got "
                f"window={self.window}, kernel={self.kernel}, channels={self.channels}, "
                f"score_rows={self.score_rows}, score={self.score!r}"
            )


class ConvAE1dNet(nn.Module):
    """forward(x float32 (B, L, D) standardised) -> float32 (B,) reconstruction MSE."""

    def __init__(self, n_features: int, cfg: ConvAE1dConfig) -> None:
        super().__init__()
        c1, c2 = cfg.channels
        k, pad = cfg.kernel, cfg.kernel // 2
        self.score_rows = int(cfg.score_rows)
        self.max_feature = cfg.score == "max_feature"
        self.encoder = nn.Sequential(
            nn.Conv1d(n_features, c1, k, 2, pad),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Conv1d(c1, c2, k, 2, pad),
            nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose1d(c2, c2, k, 2, pad, output_padding=1),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.ConvTranspose1d(c2, c1, k, 2, pad, output_padding=1),
            nn.ReLU(),
            nn.Conv1d(c1, n_features, k, 1, pad),
        )

    def errors(self, x: torch.Tensor) -> torch.Tensor:
        """Squared reconstruction errors (B, L, D) of windows x (B, L, D)."""
        recon = self.decoder(self.encoder(x.transpose(1, 2))).transpose(1, 2)
        return (x - recon) ** 2

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Per-window training loss (B,): MSE over the whole window."""
        return self.errors(x).mean(dim=(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-window score (B,) over the last score_rows rows (all when 0): the MSE, or the
        largest per-feature MSE ("max_feature")."""
        err = self.errors(x)
        if self.score_rows:
            err = err[:, -self.score_rows :]
        return window_score(err, self.max_feature)


@register_detector("conv_ae_1d")
class ConvAE1d(WindowNetDetector):
    """1-D conv autoencoder over windows; score = reconstruction MSE (mean or worst feature)."""

    config_cls = ConvAE1dConfig

    def _build_network(self, length: int, n_features: int) -> nn.Module:
        return ConvAE1dNet(n_features, self.config)
