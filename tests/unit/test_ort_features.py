"""Unit tests: PatchCore's training features through ONNX Runtime match torch, and a parity
failure falls back to torch (logged), on a tiny random-weight backbone."""

from __future__ import annotations

import json
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


def test_exported_graph_is_cached_and_checked_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    """The second fit of the same module reads the cached graph (no export); a corrupt cached
    graph is dropped and exported again (logged); when that export fails too, torch is used."""
    monkeypatch.setenv("EDGEAD_CACHE_DIR", str(tmp_path))
    images = gradient_images(3, 2, SIZE, False)
    first = create_detector("patchcore", CONFIG)
    first.embed(images)
    cached = list((tmp_path / "onnx_features").glob("*.onnx"))
    assert len(cached) == 1 and cached[0].stat().st_size > 0

    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("exported although the graph is cached")

    real_export = torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", no_export)
    second = create_detector("patchcore", CONFIG)
    np.testing.assert_array_equal(second.embed(images), first.embed(images))
    assert second.feature_engine_ == "onnxruntime"

    cached[0].write_bytes(b"not an onnx graph")
    with caplog.at_level(logging.WARNING, logger="edgead.models._ort_features"):
        third = create_detector("patchcore", CONFIG)
        third.embed(images)  # export still refused: stale graph dropped, then torch
    assert third.feature_engine_ == "torch (fallback)"
    assert "exporting again" in caplog.text and "using torch" in caplog.text
    assert not cached[0].exists()
    monkeypatch.setattr(torch.onnx, "export", real_export)
    cached[0].write_bytes(b"not an onnx graph")
    fourth = create_detector("patchcore", CONFIG)
    fourth.embed(images)
    assert fourth.feature_engine_ == "onnxruntime" and cached[0].stat().st_size > 100


def test_parity_record_skips_torch_only_for_the_recorded_graph_and_runtime(
    monkeypatch: pytest.MonkeyPatch, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    """A passed parity check is recorded beside the cached graph; the next fit with the same
    graph bytes and onnxruntime version trusts it, any other record (another runtime version,
    an oversized or garbled file) sends the graph through the check again."""
    monkeypatch.setenv("EDGEAD_CACHE_DIR", str(tmp_path))
    images = gradient_images(3, 2, SIZE, False)
    create_detector("patchcore", CONFIG).embed(images)
    records = list((tmp_path / "onnx_features").glob("*.parity.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert 0.0 <= record["parity_rel_err"] <= _ort_features.PARITY_RTOL

    def embed_logs() -> str:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="edgead.models._ort_features"):
            det = create_detector("patchcore", CONFIG)
            det.embed(images)
        assert det.feature_engine_ == "onnxruntime"
        return caplog.text

    assert "checked when it was cached" in embed_logs()
    records[0].write_text(json.dumps({**record, "onnxruntime": "0.0.0"}))
    assert "checked when it was cached" not in embed_logs()  # checked again, record rewritten
    assert json.loads(records[0].read_text())["onnxruntime"] != "0.0.0"
    for garbage in (b"[1, 2]", b"{", b" " * (_ort_features.MAX_RECORD_BYTES + 1)):
        records[0].write_bytes(garbage)
        assert "parity with torch: " in embed_logs()
