"""The runtime scores a real image in a process where torch, torchvision and scikit-learn cannot
be imported (STYLE.md 2.1): the bundle is built here by the exporter, scored in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.tiny_detectors import fitted_tiny, tiny_bundle

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[2]

_SCRIPT = r"""
import json, sys
for name in ("torch", "torchvision", "sklearn", "timm", "scipy"):
    sys.modules[name] = None  # any `import torch` now raises ImportError
import cv2
from edgead.runtime import Detector

bundle, image = sys.argv[1], sys.argv[2]
frame = cv2.imread(image, cv2.IMREAD_COLOR)
with Detector.load(bundle, device="cpu", threads=1) as det:
    res = det(frame)  # BGR, as OpenCV reads it
    print(json.dumps({"backend": det.backend, "raw": res.raw_score, "score": res.score,
                      "map_shape": list(res.anomaly_map.shape), "frame_shape": list(frame.shape),
                      "torch_loaded": any(sys.modules.get(m) is not None
                                          for m in ("torch", "torchvision", "sklearn"))}))
"""


def _real_image() -> Path:
    """An MPDD test image when the shared data is present, else a photo matplotlib ships."""
    data = Path(os.environ.get("EDGEAD_DATA", REPO.parent / "shared" / "datasets"))
    mpdd = sorted((data / "mpdd_metal_plate" / "test" / "defective").glob("*.png"))
    if mpdd:
        return mpdd[0]
    import matplotlib

    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not photo.is_file():
        pytest.skip(
            "no real image: neither ../shared/datasets/mpdd_metal_plate nor matplotlib's "
            "sample photo is available"
        )
    return photo


@pytest.mark.parametrize("target", ["onnx", "openvino"])
def test_runtime_scores_real_image_without_torch(tmp_path: Path, target: str) -> None:
    import cv2

    det, _ = fitted_tiny()
    bundle = tiny_bundle(target)
    image = _real_image()
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(bundle), str(image)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["torch_loaded"] is False
    assert out["backend"] == (
        "openvino/CPU" if target == "openvino" else "onnxruntime/CPUExecutionProvider"
    )
    assert out["map_shape"] == out["frame_shape"][:2]
    # The same frame scored by the torch detector in this process gives the same raw score.
    frame = cv2.imread(str(image), cv2.IMREAD_COLOR)
    from edgead.ops.image import resize_frame

    rgb = resize_frame(frame, (32, 32), "area", channel_order="BGR")
    expected = float(det.score([rgb]).scores[0])
    assert out["raw"] == pytest.approx(expected, rel=1e-4)
    assert 0.0 <= out["score"] <= 1.0 and np.isfinite(out["raw"])
