"""Seed ensembles (`n_members`) and step-scaled epochs (`min_steps`) of the tabular nets (issue 20).

Tolerance: the ensemble's score vs the members trained alone, 1e-5 absolute (float32 sums of
standardised scores of order 1).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from edgead.errors import ConfigError
from edgead.models._tabular import MemberEnsemble, scaled_epochs
from edgead.models.autoencoder import AEConfig
from edgead.models.base import create_detector


@pytest.fixture(scope="module")
def rows() -> dict[str, np.ndarray]:
    """Correlated normal training rows and shifted test rows."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(3)
    mix = rng.normal(size=(5, 5))
    train = (rng.normal(size=(120, 5)) @ mix + 3.0).astype(np.float32)
    test = (rng.normal(size=(40, 5)) * 3.0 + 3.0).astype(np.float32)
    return {"train": train, "test": test}


@pytest.mark.parametrize("name", ["ae", "vae"])
def test_ensemble_is_mean_of_standardised_members(name: str, rows: dict[str, np.ndarray]) -> None:
    """Member k is the same detector trained alone with seed + k; each member's scores are
    standardised by their mean / std over the training rows, then averaged."""
    cfg = {"epochs": 3, "min_steps": 0}
    ens = create_detector(name, {**cfg, "n_members": 3})
    ens.fit(rows["train"], seed=5)
    assert isinstance(ens.net, MemberEnsemble) and len(ens.history["members"]) == 3
    expected = []
    for k in range(3):
        single = create_detector(name, {**cfg, "n_members": 1})
        single.fit(rows["train"], seed=5 + k)
        fit_scores = single.score(rows["train"]).scores.astype(np.float64)
        test_scores = single.score(rows["test"]).scores.astype(np.float64)
        expected.append((test_scores - fit_scores.mean()) / fit_scores.std())
    got = ens.score(rows["test"]).scores
    np.testing.assert_allclose(got, np.mean(expected, axis=0), atol=1e-5)
    # members differ (different seeds), so the mean is not one member's score
    assert np.abs(expected[0] - expected[1]).max() > 1e-3


def test_ensemble_state_roundtrip_and_config(rows: dict[str, np.ndarray]) -> None:
    ens = create_detector("ae", {"epochs": 2, "min_steps": 0, "n_members": 2})
    ens.fit(rows["train"], seed=0)
    buf = io.BytesIO()
    np.savez(buf, **ens.state_arrays())
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    assert {"net.center", "net.spread"} <= set(arrays)
    restored = create_detector("ae", {"epochs": 2, "min_steps": 0, "n_members": 2})
    restored.load_state_arrays(arrays)
    np.testing.assert_array_equal(
        restored.score(rows["test"]).scores, ens.score(rows["test"]).scores
    )
    for bad in ({"n_members": 0}, {"n_members": 17}, {"min_steps": -1}):
        with pytest.raises(ConfigError, match="out of range"):
            create_detector("ae", bad)


def test_min_steps_scales_epochs_and_patience(rows: dict[str, np.ndarray]) -> None:
    cfg = AEConfig(epochs=50, patience=10, batch_size=128, min_steps=1000)
    assert scaled_epochs(cfg, 100) == (1000, 200)  # 1 batch per epoch
    assert scaled_epochs(cfg, 300) == (334, 67)  # 3 batches per epoch
    assert scaled_epochs(cfg, 128 * 20) == (50, 10)  # 20 x 50 steps: unchanged
    assert scaled_epochs(AEConfig(epochs=50, patience=10, min_steps=0), 100) == (50, 10)
    assert AEConfig().min_steps == 1000 and AEConfig().n_members == 3  # the LODO-chosen defaults
    one = {"patience": 0, "val_fraction": 0.0, "n_members": 1}
    det = create_detector("ae", {"epochs": 2, "min_steps": 6, **one})
    det.fit(rows["train"], seed=0)  # 120 rows, batch 128: 1 step per epoch -> 6 epochs
    assert det.history["epochs_run"] == 6
