"""Artefacts shared by the integration tests: PatchCore trained on MPDD once per session.

Training PatchCore on MPDD is the slow part of several tests (bundle parity, index, soak), so
they share one run at 224 px (10 % coreset, 10 % of train/good held out for the threshold),
trained exactly as `edgead train patchcore --image-size 224` does.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

MPDD_SIZE_PX = 224


@pytest.fixture(scope="session")
def mpdd_root() -> Path:
    """The MPDD metal_plate folder, or skip with the reason."""
    env = os.environ.get("EDGEAD_DATA")
    base = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
    path = base / "mpdd_metal_plate"
    if not (path / "train" / "good").is_dir():
        pytest.skip(f"MPDD metal_plate not found at {path}; set EDGEAD_DATA to the datasets folder")
    return path


@pytest.fixture(scope="session")
def mpdd_run_224(mpdd_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run directory of PatchCore trained on MPDD at 224 px and evaluated on its test split
    (so run.json holds the metrics that export compares the bundle against)."""
    import torch

    from edgead.evaluation import evaluate_run
    from edgead.training import train_run

    torch.set_num_threads(2)
    run = tmp_path_factory.mktemp("mpdd_patchcore_224") / "run"
    train_run(
        "patchcore", mpdd_root, run, {"image_size": MPDD_SIZE_PX, "coreset_ratio": 0.1}, seed=0
    )
    evaluate_run(run)
    return run
