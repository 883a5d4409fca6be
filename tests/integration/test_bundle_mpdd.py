"""MPDD metal_plate: a PatchCore run exported to ONNX Runtime and OpenVINO bundles (fp32) scores
the test set like the run itself.

Must show (issue 3): bundle image AUROC within 0.002 of the run's on both backends, per-image
raw scores within 1e-3 relative. The run is trained once per module at 224 px (bank of a few
thousand vectors: coreset_ratio 0.1 of 49 x 784 patches).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.integration

AUROC_TOLERANCE = 0.002
SCORE_RTOL = 1e-3
SIZE_PX = 224


@pytest.fixture(scope="module")
def mpdd_run(mpdd_run_224: Path, mpdd_root: Path) -> dict[str, Any]:
    """The shared MPDD run (conftest): run dir, torch test scores, run image AUROC, test data."""
    from edgead import metrics
    from edgead.data.datasets import load_image_dataset
    from edgead.rundir import load_run

    detector, _ = load_run(mpdd_run_224)
    test = load_image_dataset(mpdd_root, SIZE_PX).test_set()
    images = [test.images[i] for i in range(len(test))]
    scored = detector.score(images)
    return {
        "run": mpdd_run_224,
        "scores": scored.scores,
        "auroc": metrics.image_metrics(test.labels, scored.scores)["auroc"],
        "labels": np.asarray(test.labels),
        "images": images,
        "root": mpdd_root,
        "bank": detector.describe()["memory_bank_size"],
    }


@pytest.fixture(scope="module")
def openvino_bundle(mpdd_run: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgead.export import export_run

    out = tmp_path_factory.mktemp("bundle") / "mpdd_openvino_fp32.edgead"
    # exact index: this checks the issue-3 parity (the compressed default re-fits the threshold)
    export_run(mpdd_run["run"], "openvino", "fp32", out, index={"index": "flat"})
    return out


def test_bank_has_a_few_thousand_vectors(mpdd_run: dict[str, Any]) -> None:
    assert 1000 <= mpdd_run["bank"] <= 10000


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_bundle_matches_run(mpdd_run: dict[str, Any], openvino_bundle: Path, backend: str) -> None:
    from edgead import metrics
    from edgead.runtime import Detector

    with Detector.load(openvino_bundle, device="cpu", backend=backend, threads=2) as det:
        assert det.backend.startswith(backend) and det.fallbacks == []
        results = det(mpdd_run["images"], channel_order="RGB")
    raw = np.array([r.raw_score for r in results])
    rel = np.abs(raw - mpdd_run["scores"]) / np.abs(mpdd_run["scores"])
    assert rel.max() <= SCORE_RTOL, f"worst per-image relative error {rel.max():.2e} on {backend}"
    auroc = metrics.image_metrics(mpdd_run["labels"], raw)["auroc"]
    print(
        f"{backend}: run AUROC {mpdd_run['auroc']:.5f}, bundle {auroc:.5f}, worst per-image "
        f"relative score error {rel.max():.2e}"
    )
    assert abs(auroc - mpdd_run["auroc"]) <= AUROC_TOLERANCE, (auroc, mpdd_run["auroc"])


def test_manifest_metrics_measured_through_runtime(
    mpdd_run: dict[str, Any], openvino_bundle: Path
) -> None:
    from edgead.bundle import read_bundle

    manifest = read_bundle(openvino_bundle).manifest
    assert manifest.export["parity_inputs"]["source"] == "run data"
    assert manifest.export["parity"]["openvino"]["backend_info"]["precision_hint_used"] == "f32"
    assert abs(manifest.metrics["image_auroc_delta"]) <= AUROC_TOLERANCE
    assert (
        manifest.metrics["n_test"] == len(mpdd_run["labels"]) and "pixel_auroc" in manifest.metrics
    )
