"""MPDD metal_plate: a PatchCore run exported to ONNX Runtime and OpenVINO bundles (fp32) scores
the test set like the run itself.

Must show (issue 3): bundle image AUROC within 0.002 of the run's on both backends, per-image
raw scores within 1e-3 relative. The run is trained once per module at 224 px (bank of a few
thousand vectors: coreset_ratio 0.1 of 49 x 784 patches).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.integration

AUROC_TOLERANCE = 0.002
SCORE_RTOL = 1e-3
SIZE_PX = 224


def _mpdd_root() -> Path:
    env = os.environ.get("EDGEAD_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
    path = root / "mpdd_metal_plate"
    if not (path / "train" / "good").is_dir():
        pytest.skip(f"MPDD metal_plate not found at {path}; set EDGEAD_DATA to the datasets folder")
    return path


@pytest.fixture(scope="module")
def mpdd_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Train PatchCore on MPDD once: run dir, torch test scores, run image AUROC, test data."""
    import torch

    from edgead import metrics
    from edgead.data.images import load_image_dataset, split_train_val
    from edgead.models.base import create_detector
    from edgead.rundir import save_run

    torch.set_num_threads(2)
    root = _mpdd_root()
    dataset = load_image_dataset(root, SIZE_PX)
    train = dataset.train_images()
    fit_idx, val_idx = split_train_val(len(train), 0.1, seed=0)
    detector = create_detector("patchcore", {"image_size": SIZE_PX, "coreset_ratio": 0.1})
    detector.fit([train[int(i)] for i in fit_idx], seed=0)
    val_scores = detector.score([train[int(i)] for i in val_idx]).scores
    threshold = metrics.threshold_from_normal(val_scores, 99.0)
    test = dataset.test_set()
    images = [test.images[i] for i in range(len(test))]
    scored = detector.score(images)
    run_metrics = metrics.image_metrics(test.labels, scored.scores)
    meta = {
        "threshold": {"value": threshold, "policy": "percentile:99"},
        "normalisation": metrics.normalisation_from_scores(val_scores, threshold),
        "data": {"path": str(root), "n_train": len(fit_idx), "n_val": len(val_idx)},
        "metrics": {"image_auroc": run_metrics["auroc"]},
        "seed": 0,
    }
    run_dir = save_run(tmp_path_factory.mktemp("mpdd") / "run", detector, meta)
    return {
        "run": run_dir,
        "scores": scored.scores,
        "auroc": run_metrics["auroc"],
        "labels": np.asarray(test.labels),
        "images": images,
        "root": root,
        "bank": detector.describe()["memory_bank_size"],
    }


@pytest.fixture(scope="module")
def openvino_bundle(mpdd_run: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgead.export import export_run

    out = tmp_path_factory.mktemp("bundle") / "mpdd_openvino_fp32.edgead"
    export_run(mpdd_run["run"], "openvino", "fp32", out)
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
