"""Real-data checks of the image loaders (MPDD metal_plate in ../shared/datasets)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgead.data.datasets import load_image_dataset
from edgead.data.images import MVTecFolder

pytestmark = pytest.mark.integration

#: Counts documented in ../shared/datasets/README.md.
MPDD_COUNTS = {"n_train": 54, "n_test": 26 + 81, "n_test_defective": 81}


@pytest.fixture(scope="module")
def mpdd_root(shared_datasets: Path) -> Path:
    root = shared_datasets / "mpdd_metal_plate"
    if not root.is_dir():
        pytest.skip(f"MPDD metal_plate not found at {root}")
    return root


def test_mpdd_loads_with_masks(mpdd_root: Path) -> None:
    data = load_image_dataset(mpdd_root, 128)
    assert isinstance(data, MVTecFolder) and data.has_masks
    summary = data.describe()
    assert {k: summary[k] for k in MPDD_COUNTS} == MPDD_COUNTS
    image = data.train_images()[0]
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    test = data.test_set()
    masks = test.masks_array()
    assert masks is not None and masks.shape == (len(test), 128, 128)
    assert not masks[test.labels == 0].any()
    coverage = masks[test.labels == 1].mean(axis=(1, 2))
    assert (coverage > 0).all() and (coverage < 0.9).all()
