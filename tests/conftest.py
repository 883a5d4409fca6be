"""Shared test fixtures: a tiny synthetic MVTec-layout folder and the real-data root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.data import make_synthetic_mvtec

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Caches (e.g. exported feature graphs) go to a temp dir, never to the user's home."""
    os.environ["EDGEAD_CACHE_DIR"] = str(tmp_path_factory.mktemp("edgead_cache"))


@pytest.fixture()
def synthetic_mvtec(tmp_path: Path) -> Path:
    """A tiny MVTec-layout category folder (see `make_synthetic_mvtec`) in a temp dir."""
    return make_synthetic_mvtec(tmp_path / "synthetic_category")


def shared_datasets_root() -> Path | None:
    """The real-data root: $EDGEAD_DATA, else ../shared/datasets beside the repo; None if absent."""
    env = os.environ.get("EDGEAD_DATA")
    candidate = Path(env).expanduser() if env else REPO_ROOT.parent / "shared" / "datasets"
    return candidate if candidate.is_dir() else None


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """Root of the real data sets (read-only); skips the test when it is absent."""
    root = shared_datasets_root()
    if root is None:
        where = os.environ.get("EDGEAD_DATA") or str(REPO_ROOT.parent / "shared" / "datasets")
        pytest.skip(f"real data not found at {where}; set EDGEAD_DATA to the datasets folder")
    return root
