"""torchvision ResNets as feature extractors: layer2 (stride 8) and layer3 (stride 16).

ImageNet weights are read only from local files, never downloaded: `$EDGEAD_WEIGHTS_DIR`
first, then torch hub's checkpoint folder (`torch.hub.get_dir()/checkpoints`), under
torchvision's standard file names.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tv_models

from edgead.errors import ConfigError
from edgead.models.backbones._registry import FeatureExtractor, FeatureInfo, register_backbone

logger = logging.getLogger(__name__)

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
#: name -> (torchvision builder, standard checkpoint file name, download URL)
_RESNETS: dict[str, tuple[Callable[..., tv_models.ResNet], str, str]] = {
    "resnet18": (
        tv_models.resnet18,
        "resnet18-f37072fd.pth",
        "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    ),
    "wide_resnet50_2": (
        tv_models.wide_resnet50_2,
        "wide_resnet50_2-32ee1156.pth",
        "https://download.pytorch.org/models/wide_resnet50_2-32ee1156.pth",
    ),
}


def weight_search_dirs() -> list[Path]:
    """Folders searched for backbone checkpoints, in order: $EDGEAD_WEIGHTS_DIR, torch hub."""
    dirs = []
    env = os.environ.get("EDGEAD_WEIGHTS_DIR")
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(Path(torch.hub.get_dir()) / "checkpoints")
    return dirs


def find_weights(name: str) -> Path:
    """Path of the local ImageNet checkpoint of backbone `name`.

    Raises:
        ConfigError: no directory holds the file; the message names the file, the folders
            searched and where to get it.
    """
    _, filename, url = _RESNETS[name]
    searched = weight_search_dirs()
    for folder in searched:
        candidate = folder / filename
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"pretrained weights for backbone '{name}' not found: looked for {filename} in "
        f"{', '.join(str(d) for d in searched)}. edgead never downloads; fetch {url} on a "
        f"machine with internet and copy it into one of those folders (or set "
        f"EDGEAD_WEIGHTS_DIR), or use backbone 'efficientnet_lite0' whose weights ship as a package"
    )


def _out_channels(layer: nn.Sequential) -> int:
    """Channels produced by a ResNet layer (BasicBlock: bn2, Bottleneck: bn3)."""
    last = layer[-1]
    norm = getattr(last, "bn3", None) or last.bn2
    return int(norm.num_features)


class ResNetFeatures(FeatureExtractor):
    """ResNet trunk up to layer3; returns [layer2 (stride 8), layer3 (stride 16)]."""

    def __init__(self, net: tv_models.ResNet) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        self.feature_info = FeatureInfo(
            channel_counts=(_out_channels(net.layer2), _out_channels(net.layer3)),
            reductions=(8, 16),
        )
        self.mean = _IMAGENET_MEAN
        self.std = _IMAGENET_STD

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """[float32 (B, c8, H/8, W/8), float32 (B, c16, H/16, W/16)] from normalised images.

        Args:
            images: float32 (B, 3, H, W) RGB normalised with ImageNet mean/std.
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        f8 = self.layer2(self.layer1(x))
        return [f8, self.layer3(f8)]


def _build(name: str, pretrained: bool) -> ResNetFeatures:
    builder, _, _ = _RESNETS[name]
    net = builder(weights=None)
    if pretrained:
        path = find_weights(name)
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
        logger.info("loaded %s ImageNet weights from %s", name, path)
    return ResNetFeatures(net)


@register_backbone("resnet18", mean=_IMAGENET_MEAN, std=_IMAGENET_STD)
def resnet18(pretrained: bool = True) -> ResNetFeatures:
    """ResNet-18 (128 / 256 channels at strides 8 / 16)."""
    return _build("resnet18", pretrained)


@register_backbone("wide_resnet50_2", mean=_IMAGENET_MEAN, std=_IMAGENET_STD)
def wide_resnet50_2(pretrained: bool = True) -> ResNetFeatures:
    """Wide ResNet-50-2 (512 / 1024 channels at strides 8 / 16)."""
    return _build("wide_resnet50_2", pretrained)
