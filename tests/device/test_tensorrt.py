"""Native TensorRT: engine build, cache and scoring parity vs ONNX Runtime on the CPU.

Skipped (with the reason) where the tensorrt package, cuda-python or an NVIDIA GPU is absent.
Run on a device: `pytest -m tensorrt tests/device/test_tensorrt.py`.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu]

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))


def _skip_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "the tensorrt Python package is not installed (pip install edgead[tensorrt])"
    from edgead.errors import BackendUnavailableError
    from edgead.runtime.backends.tensorrt import _import_trt

    try:
        _, cudart = _import_trt()  # cuda.bindings.runtime or cuda.cudart; TensorRT >= 10
    except BackendUnavailableError as exc:
        return str(exc)
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count < 1:
        return f"no CUDA device visible (cudaGetDeviceCount -> {err}, {count})"
    return None


_REASON = _skip_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)


@pytest.mark.parametrize("precision, rtol", [("fp32", 1e-3), ("fp16", 5e-2)])
def test_engine_builds_caches_and_matches_cpu(tmp_path: Path, precision: str, rtol: float) -> None:
    from edgead.export import export_detector
    from edgead.runtime import Detector
    from edgead.runtime.backends.tensorrt import engine_cache_dir
    from tests.helpers.tiny_detectors import fitted_tiny, parity_images

    det_torch, meta = fitted_tiny()
    bundle = tmp_path / f"trt_{precision}.edgead"
    export_detector(det_torch, meta, "tensorrt", precision, bundle, parity_inputs=parity_images())
    images = list(parity_images())
    with Detector.load(bundle, device="cpu") as cpu:
        expected = np.array([r.raw_score for r in cpu(images, channel_order="RGB")])
    with Detector.load(bundle, device="cuda", backend="tensorrt") as gpu:
        assert gpu.backend.startswith("tensorrt/"), gpu.fallbacks
        # verified by default: the engine reproduces the bundle's reference outputs
        assert gpu.reference_check is not None and gpu.reference_check.passed
        assert gpu.reference_check.precision == precision
        got = np.array([r.raw_score for r in gpu(images, channel_order="RGB")])
        single = gpu(images[0], channel_order="RGB")
    np.testing.assert_allclose(got, expected, rtol=rtol)
    assert single.raw_score == pytest.approx(got[0], rel=1e-5)
    cached = sorted(engine_cache_dir(bundle).glob("*.engine"))
    assert len(cached) == 1 and precision in cached[0].name
    stamp = cached[0].stat().st_mtime_ns
    with Detector.load(bundle, device="cuda", backend="tensorrt") as again:  # uses the cache
        assert again.backend.startswith("tensorrt/")
    assert cached[0].stat().st_mtime_ns == stamp
    cached[0].write_bytes(cached[0].read_bytes()[:-10])  # damaged cache entry -> rebuilt
    with Detector.load(bundle, device="cuda", backend="tensorrt") as rebuilt:
        assert rebuilt.backend.startswith("tensorrt/")
    shutil.rmtree(engine_cache_dir(bundle))
