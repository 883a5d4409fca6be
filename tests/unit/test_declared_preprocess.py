"""Detectors declare their preprocessing (timm's PretrainedCfg habit); the exporter copies the
declaration into the manifest instead of inspecting the graph's module classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgead.errors import ConfigError
from edgead.models.backbones import backbone_preprocess, create_backbone, register_backbone
from edgead.models.base import ImagePreprocess, create_detector
from tests.helpers.tiny_detectors import TINY_PATCH_MEAN, TINY_PATCH_STD, tiny_bundle
from tests.helpers.tiny_models import TINY_STD, TinyBackbone, gradient_images
from tests.helpers.tiny_models import register_tiny_backbone as _register

TINY = _register("tiny_test_declared_preprocess")
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@pytest.mark.parametrize(
    ("mean", "std", "words"),
    [
        ((0.5, 0.5), (0.5, 0.5), "3 channels"),
        ((0.5, 0.5, 0.5), (0.5, 0.0, 0.5), "std must be > 0"),
    ],
)
def test_bad_declarations_are_refused(mean: tuple, std: tuple, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        ImagePreprocess(mean=mean, std=std)


def test_backbones_declare_their_statistics_without_being_built() -> None:
    declared = backbone_preprocess("resnet18")
    assert (declared.mean, declared.std) == IMAGENET
    assert backbone_preprocess("efficientnet-lite0").std == (0.5, 0.5, 0.5)
    with pytest.raises(ConfigError, match="backbone"):
        backbone_preprocess("no_such_backbone")


def test_register_backbone_needs_both_statistics_and_they_must_match_the_module() -> None:
    with pytest.raises(ConfigError, match="both mean and std"):
        register_backbone("_half_declared", mean=(0.5, 0.5, 0.5))
    name = "_tiny_declared_wrongly"
    register_backbone(name, mean=(0.1, 0.1, 0.1), std=TINY_STD)(lambda pretrained: TinyBackbone())
    with pytest.raises(ConfigError, match="make them agree"):
        create_backbone(name, pretrained=False)


@pytest.mark.parametrize("name", ["padim", "patchcore"])
def test_backbone_detectors_declare_what_their_graph_normalises_with(name: str) -> None:
    cfg = {"image_size": 32, "backbone": TINY, "pretrained": False}
    det = create_detector(name, cfg)
    det.fit(gradient_images(6, 0, 32), seed=0)
    declared = det.input_preprocess()
    assert declared is not None
    # test-side look into the graph: its first layer folds mean/std into scale and shift
    layers = [m for m in det.export_spec().module.modules() if hasattr(m, "shift")]
    assert layers, f"{name}: no normalising layer found in the graph"
    scale = layers[0].scale.flatten().double().numpy()
    shift = layers[0].shift.flatten().double().numpy()
    np.testing.assert_allclose(1.0 / (255.0 * scale), declared.std, rtol=1e-6)
    np.testing.assert_allclose(-shift / (255.0 * scale), declared.mean, rtol=1e-6)


def test_scratch_nets_declare_plain_0_to_1_scaling() -> None:
    declared = create_detector("conv_ae", {"image_size": 32, "work_size": 16}).input_preprocess()
    assert declared == ImagePreprocess(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert create_detector("iforest", {}).input_preprocess() is None


def test_the_manifest_carries_the_declared_preprocessing() -> None:
    from edgead.bundle import read_bundle

    manifest = read_bundle(Path(tiny_bundle("onnx"))).manifest
    assert manifest.input.mean == TINY_PATCH_MEAN and manifest.input.std == TINY_PATCH_STD
    assert (manifest.input.layout, manifest.input.channel_order) == ("NHWC", "RGB")
    assert manifest.input.shape[-1] == 3
