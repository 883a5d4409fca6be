"""A tiny random backbone for unit tests: two maps at strides 4 and 8 (6 and 10 channels)."""

from __future__ import annotations

import torch
from torch import nn

from edgead.models.backbones import FeatureExtractor, FeatureInfo, list_backbones, register_backbone


class TinyBackbone(FeatureExtractor):
    """Maps at strides 4 and 8 with 6 and 10 channels (float32, normalised input)."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(nn.Conv2d(3, 6, 3, 2, 1), nn.ReLU(), nn.Conv2d(6, 6, 3, 2, 1))
        self.stage2 = nn.Sequential(nn.ReLU(), nn.Conv2d(6, 10, 3, 2, 1))
        self.feature_info = FeatureInfo(channel_counts=(6, 10), reductions=(4, 8))
        self.mean = (0.4, 0.5, 0.6)
        self.std = (0.2, 0.25, 0.3)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        first = self.stage1(images)
        return [first, self.stage2(first)]


def register_tiny_backbone(name: str) -> str:
    """Register TinyBackbone under `name` once (pretrained is ignored) and return the name."""
    if name not in list_backbones():
        register_backbone(name)(lambda pretrained: TinyBackbone())
    return name
