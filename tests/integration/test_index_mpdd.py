"""MPDD metal_plate: the default compressed index vs exact search on a real PatchCore bank.

Must show (issue 4): the default index is >= 8x smaller than the fp32 bank and loses at most
0.005 image AUROC against exact search; its bytes round-trip through a bundle byte-for-byte and
load back with the graph's dimension checked. PatchCore is fitted once per module at 160 px
(a bank of ~2,000 vectors) to keep the test short; benchmarks/index_tradeoff.py covers 224 px
and ELPV.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.integration

SIZE_PX = 160
MIN_COMPRESSION = 8.0
MAX_IMAGE_AUROC_DROP = 0.005


def _mpdd_root() -> Path:
    env = os.environ.get("EDGEAD_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
    path = root / "mpdd_metal_plate"
    if not (path / "train" / "good").is_dir():
        pytest.skip(f"MPDD metal_plate not found at {path}; set EDGEAD_DATA to the datasets folder")
    return path


@pytest.fixture(scope="module")
def mpdd_bank() -> dict[str, Any]:
    """PatchCore fitted on MPDD train: bank (M, D) and test-patch validation set."""
    import torch

    from edgead.data.images import load_image_dataset
    from edgead.export.index import IndexValidation
    from edgead.models.base import create_detector

    torch.set_num_threads(2)
    dataset = load_image_dataset(_mpdd_root(), SIZE_PX)
    detector = create_detector("patchcore", {"image_size": SIZE_PX, "coreset_ratio": 0.1})
    detector.fit(list(dataset.train_images()), seed=0)
    test = dataset.test_set()
    embeddings = detector.embed(list(test.images))  # type: ignore[attr-defined]
    validation = IndexValidation(embeddings=embeddings, labels=test.labels,
                                 masks=test.masks_array(), grid=detector.grid_hw,  # type: ignore[attr-defined]
                                 image_size=(SIZE_PX, SIZE_PX),
                                 blur_sigma=detector.config.blur_sigma)
    return {"bank": detector.memory_bank_, "validation": validation}  # type: ignore[attr-defined]


def test_default_index_is_small_and_keeps_auroc(mpdd_bank: dict[str, Any], tmp_path: Path) -> None:
    from edgead.bundle import array_to_npy_bytes  # noqa: F401 - bundle layer is importable
    from edgead.export.index import DEFAULT_INDEX, build_index
    from edgead.runtime.nn_index import load_index

    bank = mpdd_bank["bank"]
    built = build_index(bank, None, validation=mpdd_bank["validation"])
    report = built.report
    assert report["name"] == DEFAULT_INDEX
    assert report["compression_ratio"] >= MIN_COMPRESSION, report
    assert report["image_auroc_drop"] <= MAX_IMAGE_AUROC_DROP, report
    assert report["image_auroc_exact"] > 0.6  # the exact reference itself is meaningful
    assert "pixel_auroc_drop" in report and report["recall_at_1"] > 0.2
    loaded = load_index(built.data, built.spec, embedding_dim=bank.shape[1])
    assert loaded.to_bytes() == built.data
    queries = mpdd_bank["validation"].embeddings[0]
    assert built.index is not None
    np.testing.assert_array_equal(loaded.search(queries)[0], built.index.search(queries)[0])


def test_too_coarse_index_is_refused_on_real_data(mpdd_bank: dict[str, Any]) -> None:
    from edgead.errors import ExportError
    from edgead.export.index import build_index

    with pytest.raises(ExportError, match="drops by"):
        build_index(mpdd_bank["bank"], {"index": "PCA2,PQ1x4fs"},
                    validation=mpdd_bank["validation"])
