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
from edgead.ops.preprocess_spec import ImagePreprocess

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
_PREPROCESS: dict[str, ImagePreprocess] = {}


def register_backbone(
    name: str,
    *,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator registering `factory(pretrained: bool) -> FeatureExtractor` under `name`.

    Args:
        name: registry name.
        mean, std: the per-channel RGB statistics (on 0..1) the extractor's inputs are
            normalised with, declared without building it (`backbone_preprocess`); the
            extractor's own `mean` / `std` must agree (checked by `create_backbone`).

    Raises:
        ConfigError: `name` is already registered (names are never silently overwritten), or
            only one of mean / std is given.
    """
    if (mean is None) != (std is None):
        raise ConfigError(f"backbone '{name}': declare both mean and std, or neither")

    def decorator(factory: BackboneFactory) -> BackboneFactory:
        if name in _BACKBONES:
            raise ConfigError(f"backbone '{name}' is registered twice; pick another name")
        _BACKBONES[name] = factory
        if mean is not None and std is not None:
            _PREPROCESS[name] = ImagePreprocess(mean=mean, std=std)
        return factory

    return decorator


def backbone_preprocess(name: str) -> ImagePreprocess:
    """The preprocessing backbone `name` declared at registration (nothing is built).

    Raises:
        ConfigError: unknown name, or a backbone registered without mean / std.
    """
    key = name.strip().lower().replace("-", "_")
    if key not in _BACKBONES:
        raise unknown_name_error("backbone", name, _BACKBONES)
    if key not in _PREPROCESS:
        raise ConfigError(
            f"backbone '{key}' was registered without its mean / std; register it with "
            "register_backbone(name, mean=..., std=...)"
        )
    return _PREPROCESS[key]


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
    declared = _PREPROCESS.get(key)
    if declared is not None and (
        tuple(float(v) for v in extractor.mean) != declared.mean
        or tuple(float(v) for v in extractor.std) != declared.std
    ):
        raise ConfigError(
            f"backbone '{key}' normalises with mean {extractor.mean} / std {extractor.std} but "
            f"was registered with {declared.mean} / {declared.std}; make them agree"
        )
    extractor.name = key
    extractor.pretrained = pretrained
    return extractor.freeze()
