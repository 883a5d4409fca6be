"""Backbone registry, feature-extractor contract and the Lite0 ImageNet weights."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from edgead.errors import ConfigError
from edgead.models.backbones import (
    create_backbone,
    efficientnet_lite,
    list_backbones,
    register_backbone,
)

#: ImageNet classes that fit sklearn's china.jpg (a Chinese temple with a pagoda roof).
_CHINA_CLASSES = {442, 449, 483, 663, 698, 832}  # bell cote, boathouse, castle, monastery,
#                                                   palace, stupa
_DAISY = 985


def _normalised(
    image_rgb: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...], size: int = 224
) -> torch.Tensor:
    resized = cv2.resize(image_rgb, (size, size), interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(resized).permute(2, 0, 1)[None].float() / 255.0
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def test_registry_lists_and_rejects_unknown_names() -> None:
    assert {"efficientnet_lite0", "resnet18", "wide_resnet50_2"} <= set(list_backbones())
    with pytest.raises(
        ConfigError,
        match=r"unknown backbone 'efficientnet_lite'.*did you mean "
        r"'efficientnet_lite0'",
    ):
        create_backbone("efficientnet_lite", pretrained=False)
    with pytest.raises(ConfigError, match="registered twice"):
        register_backbone("resnet18")(lambda pretrained: None)  # type: ignore[arg-type,return-value]


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18", "wide_resnet50_2"])
def test_feature_contract(name: str) -> None:
    # wide_resnet50_2 (68 M parameters) is built and run on the meta device: shapes only.
    device = torch.device("meta" if name == "wide_resnet50_2" else "cpu")
    with device:
        net = create_backbone(name.replace("_", "-", 1), pretrained=False)  # '-' accepted
    assert net.name == name
    assert not net.training
    assert not any(p.requires_grad for p in net.parameters())
    net.train()  # a frozen backbone stays in eval mode (BN statistics must not move)
    assert not net.training and all(not m.training for m in net.modules())
    assert len(net.mean) == 3 and len(net.std) == 3
    info = net.feature_info
    assert info.reduction() == [8, 16]
    with torch.no_grad():
        feats = net(torch.randn(2, 3, 64, 96, device=device))
    assert len(feats) == 2
    for feat, channels, stride in zip(feats, info.channels(), info.reduction(), strict=True):
        assert feat.dtype == torch.float32
        assert tuple(feat.shape) == (2, channels, 64 // stride, 96 // stride)


def test_lite0_odd_input_size_uses_tf_same_padding() -> None:
    net = create_backbone("efficientnet_lite0", pretrained=False)
    with torch.no_grad():
        f8, f16 = net(torch.randn(1, 3, 75, 75))
    # TF "same": every stride-2 stage gives ceil(size / 2): 75 -> 38 -> 19 -> 10 -> 5.
    assert f8.shape[-2:] == (10, 10) and f16.shape[-2:] == (5, 5)


@pytest.fixture(scope="module")
def sample_photos() -> dict[str, np.ndarray]:
    datasets = pytest.importorskip("sklearn.datasets")
    return {name: datasets.load_sample_image(name) for name in ("china.jpg", "flower.jpg")}


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    return create_backbone("efficientnet_lite0", pretrained=True)


def test_lite0_imagenet_weights_classify_real_photos(
    sample_photos: dict[str, np.ndarray], lite0: torch.nn.Module
) -> None:
    net = lite0
    assert net.mean == net.std == (0.5, 0.5, 0.5)
    with torch.no_grad():
        china = net.classify(_normalised(sample_photos["china.jpg"], net.mean, net.std))
        flower = net.classify(_normalised(sample_photos["flower.jpg"], net.mean, net.std))
    china_prob, china_cls = china.softmax(-1)[0].max(0)
    flower_prob, flower_cls = flower.softmax(-1)[0].max(0)
    assert int(china_cls) in _CHINA_CLASSES and float(china_prob) > 0.2
    assert int(flower_cls) == _DAISY and float(flower_prob) > 0.1


#: timm 1.0.31 `tf_efficientnet_lite0` (an independent implementation) with the same weights file
#: mapped in order, on china.jpg resized to 224 px with INTER_AREA: top-5 classes and logits.
#: Our module matched it bit for bit on random inputs (checked once by hand; timm is not a
#: dependency).
_TIMM_CHINA_TOP5 = ([442, 449, 663, 832, 483], [8.4384, 7.3027, 7.1498, 7.0288, 6.7849])


def test_lite0_logits_match_timm_reference(
    sample_photos: dict[str, np.ndarray], lite0: torch.nn.Module
) -> None:
    with torch.no_grad():
        logits = lite0.classify(_normalised(sample_photos["china.jpg"], lite0.mean, lite0.std))[0]
    values, classes = logits.topk(5)
    assert classes.tolist() == _TIMM_CHINA_TOP5[0]
    np.testing.assert_allclose(values.numpy(), _TIMM_CHINA_TOP5[1], atol=2e-3)


def test_lite0_random_or_misconfigured_weights_fail_the_photo_check(
    sample_photos: dict[str, np.ndarray], lite0: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    random_net = create_backbone("efficientnet_lite0", pretrained=False)
    with torch.no_grad():
        x = _normalised(sample_photos["china.jpg"], (0.5,) * 3, (0.5,) * 3)
        logits = random_net.classify(x)
    assert float(logits.softmax(-1).max()) < 0.05

    # With symmetric instead of TF "same" padding the pretrained net no longer finds the daisy.
    def symmetric(self: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(
            x, self.weight, None, self.stride, self.kernel_size[0] // 2, 1, self.groups
        )

    monkeypatch.setattr(efficientnet_lite.Conv2dSame, "forward", symmetric)
    net = lite0
    with torch.no_grad():
        flower = net.classify(_normalised(sample_photos["flower.jpg"], net.mean, net.std))
    assert int(flower.argmax()) != _DAISY


def test_lite0_stride8_map_has_sensible_statistics(
    sample_photos: dict[str, np.ndarray], lite0: torch.nn.Module
) -> None:
    net = lite0
    x = _normalised(sample_photos["china.jpg"], net.mean, net.std, size=128)
    with torch.no_grad():
        f8, f16 = net(x)
    assert torch.isfinite(f8).all() and torch.isfinite(f16).all()
    assert f8.std() > 0.1 and f16.std() > 0.1  # not collapsed (e.g. a missing BN load)


def test_resnet_weights_are_read_only_from_local_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = tmp_path / "hub"
    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setenv("EDGEAD_WEIGHTS_DIR", str(weights))
    with pytest.raises(ConfigError) as info:
        create_backbone("resnet18", pretrained=True)
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message
    assert str(weights) in message and str(hub / "checkpoints") in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message

    import torchvision

    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(reference, weights / "resnet18-f37072fd.pth")  # torchvision's checkpoint format
    net = create_backbone("resnet18", pretrained=True)
    assert net.pretrained
    assert torch.equal(net.layer3[0].conv1.weight, reference["layer3.0.conv1.weight"])
    assert torch.equal(net.bn1.running_var, reference["bn1.running_var"])


@pytest.mark.parametrize(
    "kernel, size, expected_pads",
    [
        (3, 16, (0, 1)),  # even input, k3 s2: TF pads 0 before, 1 after
        (5, 16, (1, 2)),  # even input, k5 s2: 1 before, 2 after
        (3, 15, (1, 1)),  # odd input: symmetric
    ],
)
def test_conv2d_same_matches_tensorflow_padding(
    kernel: int, size: int, expected_pads: tuple[int, int]
) -> None:
    torch.manual_seed(0)
    conv = efficientnet_lite.Conv2dSame(2, 3, kernel, 2, 0, bias=False)
    x = torch.randn(1, 2, size, size)
    before, after = expected_pads
    reference = torch.nn.functional.conv2d(
        torch.nn.functional.pad(x, [before, after, before, after]), conv.weight, stride=2
    )
    with torch.no_grad():
        out = conv(x)
    assert out.shape[-1] == -(-size // 2)
    torch.testing.assert_close(out, reference)
