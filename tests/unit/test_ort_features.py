"""Unit tests: PatchCore's training features through ONNX Runtime match torch, and a parity
failure falls back to torch (logged), on a tiny random-weight backbone."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from edgead.errors import ConfigError
from edgead.models import _ort_features
from edgead.models.base import create_detector
from tests.helpers.tiny_models import gradient_images, register_tiny_backbone

TINY = register_tiny_backbone("tiny_test_ort_features")
SIZE = 32
CONFIG = {"backbone": TINY, "pretrained": False, "image_size": SIZE, "coreset_ratio": 0.5}


def test_onnxruntime_features_match_torch() -> None:
    det = create_detector("patchcore", CONFIG)
    images = gradient_images(5, 2, SIZE, False)
    got = det.embed(images)
    assert det.feature_engine_ == "onnxruntime"
    with torch.inference_mode():
        ref = det.embedder(torch.from_numpy(images))[0].numpy()
    assert got.shape == ref.shape and got.dtype == np.float32
    assert float(np.abs(got - ref).max()) <= 1e-4 * float(np.abs(ref).max())
    det.fit(images, seed=0)
    assert det.describe()["feature_engine"] == "onnxruntime"


def test_parity_failure_falls_back_to_torch(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_ort_features, "PARITY_RTOL", -1.0)  # nothing can pass
    det = create_detector("patchcore", CONFIG)
    images = gradient_images(3, 2, SIZE, False)
    with caplog.at_level(logging.WARNING, logger="edgead.models._ort_features"):
        got = det.embed(images)
    assert det.feature_engine_ == "torch (fallback)"
    assert "using torch" in caplog.text
    with torch.inference_mode():
        ref = det.embedder(torch.from_numpy(images))[0].numpy()
    np.testing.assert_array_equal(got, ref)


def test_torch_engine_and_unknown_engine() -> None:
    det = create_detector("patchcore", {**CONFIG, "feature_engine": "torch"})
    det.embed(gradient_images(2, 2, SIZE, False))
    assert det.feature_engine_ == "torch"
    with pytest.raises(ConfigError, match="feature_engine"):
        create_detector("patchcore", {**CONFIG, "feature_engine": "tensorflow"})
