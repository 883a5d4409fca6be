"""Unit tests: CSI (contrasting shifted instances) on tiny synthetic images with a tiny random
backbone: separation, state round trip, rotation op, and bundle parity (ORT and OpenVINO, fp32;
scores through the runtime's exact cosine search within 1e-4 relative)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgead.models.base import create_detector, get_detector_class
from edgead.models.csi import rotate90
from tests.helpers.tiny_models import gradient_images, register_tiny_backbone

TINY = register_tiny_backbone("tiny_test_csi")
SIZE = 32
CONFIG = {
    "image_size": SIZE,
    "backbone": TINY,
    "pretrained": False,
    "epochs": 3,
    "batch_size": 4,
    "proj_dim": 8,
}


@pytest.fixture(scope="module")
def fitted() -> object:
    torch.set_num_threads(1)
    det = create_detector("csi", CONFIG)
    det.fit(list(gradient_images(12, 1, SIZE, False)), seed=0)
    return det


def _test_images() -> np.ndarray:
    good = gradient_images(6, 2, SIZE, False)
    return np.concatenate([good, gradient_images(6, 3, SIZE, True)])


def test_scores_separate_and_state_round_trips(fitted: object) -> None:
    assert get_detector_class("csi").modality == "image"
    images = list(_test_images())
    out = fitted.score(images)
    assert out.scores.shape == (12,) and out.anomaly_maps is None
    assert out.scores[6:].mean() > out.scores[:6].mean()
    clone = create_detector("csi", CONFIG)
    clone.load_state_arrays(fitted.state_arrays())
    np.testing.assert_allclose(clone.score(images).scores, out.scores, rtol=1e-5)


def test_rotate90_is_a_quarter_turn() -> None:
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    for k in range(5):
        got = rotate90(x, k)
        assert torch.equal(got, torch.rot90(x, k=-k, dims=(2, 3)))


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_bundle_scores_match_torch(fitted: object, backend: str, tmp_path: Path) -> None:
    from edgead.export.exporter import export_detector
    from edgead.runtime import Detector

    images = _test_images()
    manifest = export_detector(
        fitted, {}, "openvino", "fp32", tmp_path / "csi.edgead", parity_inputs=images[:4]
    )
    assert manifest.postprocess["kind"] == "csi_nn_index" and manifest.index.factory == "Flat"
    with Detector.load(tmp_path / "csi.edgead", device="cpu", backend=backend) as det:
        results = det(list(images), channel_order="RGB")
    raw = np.array([r.raw_score for r in results])
    np.testing.assert_allclose(raw, fitted.score(list(images)).scores, rtol=1e-4)
    assert all(r.anomaly_map is None for r in results)


def test_score_layer_picks_the_scored_representation() -> None:
    from edgead.errors import ConfigError

    images = torch.from_numpy(_test_images()[:2])
    channels = 10  # the tiny backbone's last map
    for layer, width in (("features", channels), ("projection", CONFIG["proj_dim"])):
        det = create_detector("csi", {**CONFIG, "score_layer": layer})
        net = det._new_net()  # noqa: SLF001 - the graph before training
        with torch.inference_mode():
            emb, norm = net(images)
            pooled = net.features(net.normalize(images))
        assert emb.shape == (2, 4, 4 * width) and norm.shape == (2, 4)
        if layer == "features":  # rotation 0: the unit pooled features and their norm
            np.testing.assert_allclose(norm[:, 0], pooled.norm(dim=1), rtol=1e-5)
            np.testing.assert_allclose(emb[:, 0, :width] * norm[:, :1], pooled, rtol=1e-4)
    with pytest.raises(ConfigError, match="score_layer"):
        create_detector("csi", {**CONFIG, "score_layer": "logits"})
