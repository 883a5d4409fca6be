"""MPDD metal_plate: the default compressed index vs exact search on a real PatchCore bank.

Must show (issue 4): the default index is >= 8x smaller than the fp32 bank and loses at most
0.005 image AUROC against exact search; its bytes round-trip through a bundle byte-for-byte and
load back with the graph's dimension checked. Uses the session's shared PatchCore run at
224 px (tests/integration/conftest.py); benchmarks/index_tradeoff.py covers ELPV too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.integration

SIZE_PX = 224
MIN_COMPRESSION = 8.0
MAX_IMAGE_AUROC_DROP = 0.005


@pytest.fixture(scope="module")
def mpdd_bank(mpdd_run_224: Path, mpdd_root: Path) -> dict[str, Any]:
    """The shared MPDD PatchCore run (conftest): bank (M, D) and test-patch validation set."""
    from edgead.data.datasets import load_image_dataset
    from edgead.export.index import IndexValidation
    from edgead.rundir import load_run

    detector, _ = load_run(mpdd_run_224)
    test = load_image_dataset(mpdd_root, SIZE_PX).test_set()
    embeddings = detector.embed(list(test.images))  # type: ignore[attr-defined]
    validation = IndexValidation(
        embeddings=embeddings,
        labels=test.labels,
        masks=test.masks_array(),
        grid=detector.grid_hw,  # type: ignore[attr-defined]
        image_size=(SIZE_PX, SIZE_PX),
        blur_sigma=detector.config.blur_sigma,
    )
    return {"bank": detector.memory_bank_, "validation": validation}  # type: ignore[attr-defined]


def test_default_index_is_small_and_keeps_auroc(mpdd_bank: dict[str, Any], tmp_path: Path) -> None:
    from edgead.bundle import array_to_npy_bytes  # noqa: F401 - bundle layer is importable
    from edgead.export.index import DEFAULT_INDEX, build_index
    from edgead.ops.nn_index import load_index

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
        build_index(
            mpdd_bank["bank"], {"index": "PCA2,PQ1x4fs"}, validation=mpdd_bank["validation"]
        )
