"""Tiny test fixtures for image models: a random backbone (strides 4 and 8) and synthetic images."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgead.models.backbones import FeatureExtractor, FeatureInfo, list_backbones, register_backbone

TINY_MEAN = (0.4, 0.5, 0.6)
TINY_STD = (0.2, 0.25, 0.3)
#: the smallest transformer sizes a test MAE (image or time patches) trains with in seconds.
TINY_MAE_SIZES = {
    "embed_dim": 16,
    "depth": 1,
    "num_heads": 2,
    "decoder_dim": 8,
    "decoder_depth": 1,
    "score_draws": 4,
}


class TinyBackbone(FeatureExtractor):
    """Maps at strides 4 and 8 with 6 and 10 channels (float32, normalised input)."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(nn.Conv2d(3, 6, 3, 2, 1), nn.ReLU(), nn.Conv2d(6, 6, 3, 2, 1))
        self.stage2 = nn.Sequential(nn.ReLU(), nn.Conv2d(6, 10, 3, 2, 1))
        self.feature_info = FeatureInfo(channel_counts=(6, 10), reductions=(4, 8))
        self.mean = TINY_MEAN
        self.std = TINY_STD

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        first = self.stage1(images)
        return [first, self.stage2(first)]


def register_tiny_backbone(name: str) -> str:
    """Register TinyBackbone under `name` once (pretrained is ignored) and return the name."""
    if name not in list_backbones():
        register_backbone(name, mean=TINY_MEAN, std=TINY_STD)(lambda pretrained: TinyBackbone())
    return name


def gradient_images(n: int, seed: int, size: int, defect: bool = False) -> np.ndarray:
    """uint8 (n, size, size, 3): smooth gradients + noise; `defect` adds a bright 8x8 square."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(60, 180, size, dtype=np.float32)
    base = np.stack(
        [
            ramp[None, :].repeat(size, 0),
            ramp[:, None].repeat(size, 1),
            np.full((size, size), 120, np.float32),
        ],
        axis=-1,
    )
    out = base[None] + rng.normal(0, 6, size=(n, size, size, 3))
    if defect:
        for image in out:
            y, x = rng.integers(2, size - 10, size=2)
            image[y : y + 8, x : x + 8] = 255.0
    return np.clip(out, 0, 255).astype(np.uint8)
