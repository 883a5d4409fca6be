"""Unit tests: MAE on frozen backbone features (`target="features"`) with a tiny random backbone:
separation, maps, state without backbone weights, declared preprocessing, config errors and
bundle parity (ORT and OpenVINO, fp32, through the runtime, 1e-4 relative)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgead.errors import ConfigError
from edgead.models.base import create_detector
from tests.helpers.tiny_models import (
    TINY_MAE_SIZES,
    TINY_MEAN,
    gradient_images,
    register_tiny_backbone,
)

TINY = register_tiny_backbone("tiny_test_mae_features")
SIZE = 32  # tiny backbone strides 4 and 8: an 8 x 8 token grid of 6 + 10 channels
CONFIG = {
    "image_size": SIZE,
    "target": "features",
    "backbone": TINY,
    "pretrained": False,
    **TINY_MAE_SIZES,
    "epochs": 15,
    "batch_size": 8,
}


@pytest.fixture(scope="module")
def fitted() -> object:
    torch.set_num_threads(1)
    det = create_detector("mae", CONFIG)
    det.fit(gradient_images(16, 1, SIZE, False), seed=0)
    return det


def _test_images() -> np.ndarray:
    return np.concatenate([gradient_images(6, 2, SIZE, False), gradient_images(6, 3, SIZE, True)])


def test_scores_maps_and_state(fitted: object) -> None:
    out = fitted.score(_test_images())
    assert out.scores.shape == (12,) and out.anomaly_maps.shape == (12, SIZE, SIZE)
    assert out.scores[6:].mean() > out.scores[:6].mean()
    net = fitted._fitted_net()  # noqa: SLF001 - checks the graph's token grid and masks
    assert net.mae.grid == SIZE // 4 and net.mae.hidden.shape == (4, 64)
    arrays = fitted.state_arrays()
    assert not any("backbone" in key for key in arrays)  # rebuilt from the config
    assert arrays["feat_mean"].shape == (1, 1, 16) and np.all(arrays["feat_scale"] > 0)
    clone = create_detector("mae", CONFIG)
    clone.load_state_arrays({k: v.copy() for k, v in arrays.items()})
    images = _test_images()[4:8]
    np.testing.assert_allclose(clone.score(images).scores, fitted.score(images).scores, rtol=1e-5)


def test_declared_preprocessing_follows_target() -> None:
    features = create_detector("mae", CONFIG).input_preprocess()
    assert tuple(features.mean) == pytest.approx(TINY_MEAN)
    pixels_cfg = {**CONFIG, "target": "pixels", "work_size": 16, "patch_size": 4}
    pixels = create_detector("mae", pixels_cfg).input_preprocess()
    assert tuple(pixels.mean) == (0.0, 0.0, 0.0)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="target"):
        create_detector("mae", {**CONFIG, "target": "voxels"})
    bad_grid = create_detector("mae", {**CONFIG, "image_size": 20})  # 5 x 5 tokens, k = 4
    with pytest.raises(ConfigError, match="not divisible"):
        bad_grid.load_state_arrays({})


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_bundle_scores_match_torch(fitted: object, backend: str, tmp_path: Path) -> None:
    from edgead.export.exporter import export_detector
    from edgead.runtime import Detector

    images = _test_images()
    manifest = export_detector(
        fitted, {}, "openvino", "fp32", tmp_path / "mae.edgead", parity_inputs=images[:4]
    )
    assert manifest.postprocess["kind"] == "graph"
    with Detector.load(tmp_path / "mae.edgead", device="cpu", backend=backend) as det:
        results = det(list(images), channel_order="RGB")
    raw = np.array([r.raw_score for r in results])
    np.testing.assert_allclose(raw, fitted.score(images).scores, rtol=1e-4)
    assert results[0].anomaly_map.shape == (SIZE, SIZE)
