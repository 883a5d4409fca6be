"""Masked autoencoder over time patches of sensor windows (registry name "mae_1d").

A window of L standardised rows (L, D) is cut into P = L / p non-overlapping time patches of
p rows; a token holds all D sensors of its p rows (p * D values). The image MAE's transformer
(`edgead.models._mae_core.TokenMAE`: learned positions, a small encoder over the visible
patches only, a lighter decoder with a mask token at every hidden position) reconstructs the
hidden patches. Training hides a random `mask_ratio` of the patches per window and step and
minimises the squared error of the hidden patches.

Score (deterministic): the graph holds `score_draws` FIXED masks (constant buffers drawn once
from a seeded permutation, every patch hidden in the same number of draws); each value's
squared error is averaged over the draws that hid its patch, giving errors (L, D) in squared
training standard deviations, reduced as conv_ae_1d's: "mean" over rows and features, or
"max_feature" (the largest per-feature mean). A window's score belongs to its last row
(edgead/ops/windows.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgead.errors import ConfigError
from edgead.models._mae_core import TokenMAE, mask_groups, token_mae_sizes_ok, transformer_sizes
from edgead.models._windows import (
    WINDOW_SCORES,
    WindowNetDetector,
    validate_window_config,
    window_score,
)
from edgead.models.base import register_detector


@dataclass(frozen=True, kw_only=True)
class MAE1dConfig:
    """Time-patch MAE settings.

    window / stride: rows per window and rows between scored windows.
    patch_rows: rows per time patch p (divides window); mask_ratio: share of patches hidden in
        training and in every scoring draw; k = 1 / (1 - mask_ratio) must be a whole number
        dividing the patch count window / patch_rows (0.5, 0.75, ...).
    score_draws: fixed masks in the graph, a multiple of k.
    embed_dim / depth / num_heads: the encoder; decoder_dim / decoder_depth: the decoder.
    score: "mean" or "max_feature" (as conv_ae_1d).

    patch_rows and mask_ratio were chosen by two-fold leave-files-out selection on SKAB valve1
    (benchmarks/skab_select.py, docs/timeseries.md: both folds chose ratio 0.5, one p = 5, the
    other p = 4); window 40 and score "max_feature" are conv_ae_1d's defaults, taken as they are.
    """

    window: int = 40
    stride: int = 1
    patch_rows: int = 5
    mask_ratio: float = 0.5
    score_draws: int = 8
    embed_dim: int = 64
    depth: int = 2
    num_heads: int = 4
    decoder_dim: int = 32
    decoder_depth: int = 1
    score: str = "max_feature"
    epochs: int = 60
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    val_fraction: float = 0.0
    patience: int = 0

    @property
    def groups(self) -> int:
        """Disjoint visible groups per permutation: 1 / (1 - mask_ratio)."""
        return mask_groups(self.mask_ratio)

    @property
    def n_patches(self) -> int:
        """Time patches per window: window / patch_rows."""
        return self.window // max(self.patch_rows, 1)

    def validate(self) -> None:
        """ConfigError on values that cannot work."""
        validate_window_config(self)
        k = self.groups
        ok = (
            self.patch_rows >= 1
            and self.window % self.patch_rows == 0
            and token_mae_sizes_ok(self)
            and self.n_patches % k == 0
            and self.n_patches // k >= 1
            and self.score in WINDOW_SCORES
        )
        if not ok:
            raise ConfigError(
                "mae_1d: need patch_rows dividing window, k = 1 / (1 - mask_ratio) a whole "
                "number dividing window / patch_rows, score_draws a multiple of k, num_heads "
                f"dividing embed_dim and decoder_dim, depths >= 1, score in {WINDOW_SCORES}; "
                f"got window={self.window}, patch_rows={self.patch_rows}, mask_ratio="
                f"{self.mask_ratio}, score_draws={self.score_draws}, embed_dim={self.embed_dim},"
                f" decoder_dim={self.decoder_dim}, num_heads={self.num_heads}, "
                f"score={self.score!r}"
            )


class TimeMAENet(TokenMAE):
    """forward(x float32 (B, L, D) standardised) -> float32 (B,) masked-patch error score."""

    def __init__(self, n_features: int, cfg: MAE1dConfig) -> None:
        super().__init__(cfg.n_patches, cfg.patch_rows * n_features, **transformer_sizes(cfg))
        self.patch_rows = cfg.patch_rows
        self.n_features = n_features
        self.max_feature = cfg.score == "max_feature"

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, P, p * D) time patches of windows (B, L, D) (row-major: row, then sensor)."""
        return x.reshape(-1, self.pos.shape[1], self.patch_rows * self.n_features)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Per-window training loss (B,): hidden-patch MSE under a random mask (torch's global
        generator, seeded by the fit)."""
        return self.train_losses(self.tokens(x), None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-window score (B,) from the fixed masks' hidden-patch errors; export-safe."""
        n_tokens, p, d = self.pos.shape[1], self.patch_rows, self.n_features
        per_row = self.hidden_errors(
            self.tokens(x), lambda err: err.reshape(-1, n_tokens, p, d)
        )  # (B, P, p, D)
        return window_score(per_row.reshape(-1, n_tokens * p, d), self.max_feature)


@register_detector("mae_1d")
class MAE1d(WindowNetDetector):
    """Masked autoencoder over time patches; score = hidden-patch error over fixed masks."""

    config_cls = MAE1dConfig

    def _build_network(self, length: int, n_features: int) -> nn.Module:
        return TimeMAENet(n_features, self.config)
