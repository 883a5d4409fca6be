"""Contract test over the whole detector registry (timm's `test_models.py` habit).

Every registered detector goes through the same cycle on tiny synthetic data:
fit -> score -> the project's exporter (`export_detector`, OpenVINO target, fp32) ->
`edgead.runtime.Detector` on ONNX Runtime and on OpenVINO (explicit fp32 bundle, so the
OpenVINO backend compiles with INFERENCE_PRECISION_HINT f32 even on CPUs with bf16/AMX) ->
raw scores equal to the fitted model's.

A detector registered without an entry in `TINY_CONFIGS` fails
`test_every_detector_has_a_tiny_config`:
adding a family means adding its tiny config here.
Parity tolerance: |runtime - torch| <= 1e-3 * max|torch| + 1e-3 * |torch| (fp32 graphs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from edgead.models.base import create_detector, get_detector_class, list_detectors
from tests.helpers.tiny_models import TINY_MAE_SIZES, gradient_images, register_tiny_backbone

TINY = register_tiny_backbone("tiny_test_registry_contract")
SIZE = 32
RTOL = 1e-3
_SMALL_NET = {"work_size": 16, "base_channels": 4, "epochs": 2, "batch_size": 8}

#: The smallest config of every registered family that still exercises its export path.
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "patchcore": {"image_size": SIZE, "backbone": TINY, "pretrained": False, "coreset_ratio": 0.25},
    "padim": {"image_size": SIZE, "backbone": TINY, "pretrained": False, "n_features": 12},
    "fastflow": {
        "image_size": SIZE,
        "backbone": TINY,
        "pretrained": False,
        "n_blocks": 2,
        "epochs": 2,
        "batch_size": 8,
    },
    "conv_ae": {"image_size": SIZE, "latent_dim": 8, **_SMALL_NET},
    "conv_vae": {"image_size": SIZE, "latent_dim": 8, **_SMALL_NET},
    "deep_svdd_image": {"image_size": SIZE, "rep_dim": 8, **_SMALL_NET},
    "mae": {  # the default target, features of the frozen backbone (pixels: image_methods)
        "image_size": SIZE,
        "target": "features",
        "backbone": TINY,
        "pretrained": False,
        **TINY_MAE_SIZES,
        "epochs": 2,
    },
    "csi": {
        "image_size": SIZE,
        "backbone": TINY,
        "pretrained": False,
        "epochs": 1,
        "batch_size": 4,
        "proj_dim": 8,
    },
    "ae": {"epochs": 3, "min_steps": 0},  # the default 3-seed ensemble, 3 epochs each
    "vae": {"epochs": 3, "min_steps": 0},
    "deep_svdd": {"epochs": 3},
    "iforest": {"n_estimators": 20},
    "knn": {},
    "lof": {"k": 10},
    "kde": {},
    "gmm": {"n_components": 2},
    "ocsvm": {},
    "window_ae": {"window": 8, "epochs": 2, "batch_size": 16},
    "window_vae": {"window": 8, "epochs": 2, "batch_size": 16},
    "conv_ae_1d": {"window": 8, "epochs": 2, "batch_size": 16},
    "mae_1d": {
        "window": 8,
        "patch_rows": 2,
        "score_draws": 2,
        "embed_dim": 16,
        "decoder_dim": 8,
        "num_heads": 2,
        "epochs": 2,
        "batch_size": 16,
    },
}


def _registered() -> list[str]:
    """Registered product detectors (test-only registrations start with '_')."""
    return [name for name in list_detectors() if not name.startswith("_")]


def _data(modality: str) -> tuple[Any, Any, Any]:
    """(train, validation, test) inputs: uint8 (N, 32, 32, 3) images, float32 (N, 5) rows or,
    for time series, float32 (N, 3) sensor rows (two sines and a ramp, plus noise)."""
    if modality == "timeseries":
        rng = np.random.default_rng(0)
        t = np.arange(120, dtype=np.float64)
        rows = np.stack([np.sin(t / 4), np.cos(t / 6), 20 + t / 50], axis=1)
        rows = (rows + 0.05 * rng.normal(size=rows.shape)).astype(np.float32)
        return rows[:80], rows[60:100], rows[80:]
    if modality == "image":
        test = np.concatenate([gradient_images(3, 3, SIZE), gradient_images(3, 4, SIZE, True)])
        return gradient_images(12, 1, SIZE), gradient_images(4, 2, SIZE), test
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(5, 5))
    train = (rng.normal(size=(200, 5)) @ mix + 3.0).astype(np.float32)
    val = (rng.normal(size=(40, 5)) @ mix + 3.0).astype(np.float32)
    test = np.concatenate([val[:10], rng.normal(size=(6, 5)).astype(np.float32) * 4 + 3.0])
    return train, val, test.astype(np.float32)


def _run_meta(name: str, val_scores: np.ndarray) -> dict[str, Any]:
    """run.json-like threshold and normalisation from validation scores."""
    thr = float(np.percentile(val_scores, 99))
    return {
        "config": TINY_CONFIGS[name],
        "threshold": {"value": thr, "policy": "percentile:99"},
        "normalisation": {
            "method": "minmax_threshold",
            "min": float(val_scores.min()),
            "max": float(val_scores.max()),
            "threshold": thr,
        },
    }


def _runtime_raw_scores(bundle: Path, backend: str, modality: str, test: Any) -> np.ndarray:
    from edgead.runtime import Detector

    with Detector.load(bundle, device="cpu", backend=backend, threads=1) as runtime:
        assert runtime.backend.startswith(backend)
        if modality == "image":
            results = runtime(list(test), channel_order="RGB")
            return np.array([r.raw_score for r in results], np.float32)
        if modality == "timeseries":
            return runtime.score_series(test).raw_scores
        return runtime.score_rows(test).raw_scores


def test_every_detector_has_a_tiny_config() -> None:
    missing = sorted(set(_registered()) - set(TINY_CONFIGS))
    assert not missing, f"registered detectors without a tiny config in TINY_CONFIGS: {missing}"
    stale = sorted(set(TINY_CONFIGS) - set(_registered()))
    assert not stale, f"TINY_CONFIGS names detectors that are not registered: {stale}"


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_fit_score_export_runtime(name: str, tmp_path: Path) -> None:
    from edgead.export import export_detector

    pytest.importorskip("openvino")
    torch.set_num_threads(1)
    modality = get_detector_class(name).modality
    train, val, test = _data(modality)
    det = create_detector(name, TINY_CONFIGS[name])
    det.fit(train, seed=0)
    want = det.score(test).scores
    n_items = (
        len(test) - TINY_CONFIGS[name]["window"] + 1 if modality == "timeseries" else len(test)
    )
    assert want.shape == (n_items,) and np.isfinite(want).all()
    out = tmp_path / f"{name}.edgead"
    # exact search wherever there is an index: the scores must equal the fitted model's
    index = {"index": "flat"} if name == "patchcore" else None
    export_detector(
        det,
        _run_meta(name, det.score(val).scores),
        "openvino",
        "fp32",
        out,
        parity_inputs=None if modality == "timeseries" else np.asarray(test[:4]),
        index=index,
    )
    tol = RTOL * float(np.abs(want).max())
    for backend in ("onnxruntime", "openvino"):
        got = _runtime_raw_scores(out, backend, modality, test)
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=tol, err_msg=f"{name} on {backend}")
