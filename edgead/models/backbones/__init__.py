"""Frozen ImageNet feature extractors for image detectors (torch).

from edgead.models.backbones import create_backbone
net = create_backbone("efficientnet_lite0")          # frozen, eval mode
f8, f16 = net(images)                                # images normalised with net.mean/std
net.feature_info.channels(), net.feature_info.reduction()   # [40, 112], [8, 16]
"""

from edgead.models.backbones import efficientnet_lite, resnet  # noqa: F401  (register)
from edgead.models.backbones._registry import (
    FeatureExtractor,
    FeatureInfo,
    backbone_preprocess,
    create_backbone,
    list_backbones,
    register_backbone,
)

__all__ = [
    "FeatureExtractor",
    "FeatureInfo",
    "backbone_preprocess",
    "create_backbone",
    "list_backbones",
    "register_backbone",
]
