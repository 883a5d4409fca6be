"""Backbone registry and the feature-extractor contract (torch).

A feature extractor is a frozen `nn.Module` in eval mode. `forward(images)` takes float32
(B, 3, H, W) images already normalised with the extractor's own `mean`/`std` (on 0..1 RGB) and
returns a list of two feature maps at stride 8 and stride 16. Callers size themselves from
`feature_info` (channels, reductions), never from hard-coded numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from edgead.errors import ConfigError, unknown_name_error

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureInfo:
    """Channel counts and strides of the maps a feature extractor returns, in output order."""

    channel_counts: tuple[int, ...]
    reductions: tuple[int, ...]

    def channels(self) -> list[int]:
        """Channels of each returned map, e.g. [40, 112]."""
        return list(self.channel_counts)

    def reduction(self) -> list[int]:
        """Stride (input px per feature cell) of each returned map, e.g. [8, 16]."""
        return list(self.reductions)


class FeatureExtractor(nn.Module):
    """Base class of registered backbones: frozen, eval mode, two maps at strides 8 and 16.

    Attributes:
        name: registry name.
        feature_info: `FeatureInfo` of the returned maps.
        mean, std: per-channel (R, G, B) statistics on 0..1 RGB that inputs must be normalised with.
        pretrained: whether ImageNet weights were loaded.
    """

    name: str
    feature_info: FeatureInfo
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pretrained: bool

    def freeze(self) -> FeatureExtractor:
        """Put the module in eval mode and disable gradients; returns self."""
        self.eval()
        for param in self.parameters():
            param.requires_grad_(False)
        return self

    def train(self, mode: bool = True) -> FeatureExtractor:
        """Stay in eval mode: batch-norm statistics of a frozen backbone must not change."""
        if mode:
            logger.debug("backbone %s is frozen; ignoring train(True)", getattr(self, "name", "?"))
        return super().train(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        """[float32 (B, c8, H/8, W/8), float32 (B, c16, H/16, W/16)] from normalised images."""
        raise NotImplementedError


BackboneFactory = Callable[[bool], FeatureExtractor]
_BACKBONES: dict[str, BackboneFactory] = {}


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator registering `factory(pretrained: bool) -> FeatureExtractor` under `name`.

    Raises:
        ConfigError: `name` is already registered (names are never silently overwritten).
    """

    def decorator(factory: BackboneFactory) -> BackboneFactory:
        if name in _BACKBONES:
            raise ConfigError(f"backbone '{name}' is registered twice; pick another name")
        _BACKBONES[name] = factory
        return factory

    return decorator


def list_backbones() -> list[str]:
    """Sorted registry names of all backbones."""
    return sorted(_BACKBONES)


def create_backbone(name: str, pretrained: bool = True) -> FeatureExtractor:
    """A frozen feature extractor in eval mode.

    Args:
        name: registry name, e.g. "efficientnet_lite0", "resnet18", "wide_resnet50_2"
            ('-' is accepted for '_').
        pretrained: load ImageNet weights from local files (never downloaded); False builds
            random weights (for unit tests).

    Raises:
        ConfigError: unknown name, or pretrained weights that are not available locally.
    """
    key = name.strip().lower().replace("-", "_")
    if key not in _BACKBONES:
        raise unknown_name_error("backbone", name, _BACKBONES)
    extractor = _BACKBONES[key](pretrained)
    extractor.name = key
    extractor.pretrained = pretrained
    return extractor.freeze()
