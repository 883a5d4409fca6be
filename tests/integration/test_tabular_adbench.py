"""Integration: tabular detectors on a few small ADBench "Classical" sets (real data).

Protocol of benchmarks/tabular.py (train on 60 % of the normal rows, seed 0; test on the rest of
the normal rows plus all anomalies), default configs. Floors are well below the AUROC measured
on this split (see the table comment) so that they catch a broken detector, not noise.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from edgead.data.tabular import adbench_split, load_table
from edgead.models.base import create_detector

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("EDGEAD_DATA", REPO.parent / "shared" / "datasets"))
DATA = DATA / "adbench_classical"

# AUROC floors per (data set, detector). Measured on seed 0 with the default configs
# (2026-11-28, torch 2.14.1 CPU): WDBC iforest 0.992, ae 0.985, vae 0.989, deep_svdd 0.994;
# cardio iforest 0.966, ae 0.833, vae 0.883, deep_svdd 0.892. Floors sit 0.05-0.08 below.
# The defaults chosen by leave-one-dataset-out (issue 20; benchmarks/tabular_lodo.py, seed 0)
# score WDBC ae 0.983, vae 0.983 and cardio vae 0.889 (settings ae@steps3, vae@steps).
FLOORS: dict[tuple[str, str], float] = {
    ("43_WDBC", "iforest"): 0.94,
    ("43_WDBC", "ae"): 0.93,
    ("43_WDBC", "vae"): 0.93,
    ("43_WDBC", "deep_svdd"): 0.93,
    ("6_cardio", "iforest"): 0.91,
    ("6_cardio", "ae"): 0.78,
    ("6_cardio", "vae"): 0.82,
    ("6_cardio", "deep_svdd"): 0.83,
}


@pytest.fixture(scope="session")
def tabular_splits() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(train rows, test rows, test labels) per data set, seed 0."""
    if not DATA.is_dir():
        pytest.skip(f"ADBench data not found at {DATA}; set EDGEAD_DATA to the datasets folder")
    out = {}
    for name in sorted({ds for ds, _ in FLOORS}):
        path = DATA / f"{name}.npz"
        if not path.is_file():
            pytest.skip(f"{path} missing; the shared datasets folder is incomplete")
        table = load_table(path)
        assert table.y is not None
        train_idx, test_idx = adbench_split(table.y, seed=0)
        out[name] = (table.X[train_idx], table.X[test_idx], table.y[test_idx])
    return out


@pytest.mark.parametrize(("dataset", "detector"), sorted(FLOORS))
def test_auroc_floor(
    dataset: str,
    detector: str,
    tabular_splits: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> None:
    import torch

    torch.set_num_threads(1)
    train, test, labels = tabular_splits[dataset]
    det = create_detector(detector)
    det.fit(train, seed=0)
    scores = det.score(test).scores
    auroc = roc_auc_score(labels, scores)
    assert auroc >= FLOORS[(dataset, detector)], f"{detector} on {dataset}: AUROC {auroc:.4f}"
