"""A trained run: a directory with `run.json` (config, threshold, metrics), `state.npz` and
`split.json` (the held-out split, `edgead.runrecord.RunSplit`; runs from before it have none).

Loads without pickle: JSON plus `np.load(allow_pickle=False)`. Written atomically: the run is
built in a temporary sibling directory and renamed into place, so a crash never leaves a
half-written run where a good one was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgead import __version__
from edgead.config import to_dict
from edgead.errors import DataError
from edgead.models.base import BaseDetector, create_detector
from edgead.runrecord import SPLIT_JSON, RunSplit

RUN_JSON = "run.json"
STATE_NPZ = "state.npz"


def save_run(
    out_dir: str | Path,
    detector: BaseDetector,
    meta: dict[str, Any],
    split: RunSplit | None = None,
) -> Path:
    """Write `detector` (config + state arrays) and `meta` to `out_dir`, replacing it atomically.

    `meta` holds at least `threshold` ({"value", "policy", ...}) and `normalisation`
    ({"method", "min", "max", "threshold"}); see docs/ARCHITECTURE.md. `split` (the run's
    held-out split) is written to split.json when given.
    """
    detector.check_is_fitted()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if out_dir.exists() and not (out_dir / RUN_JSON).is_file() and any(out_dir.iterdir()):
        raise DataError(f"{out_dir} exists and is not an edgead run; choose another --out")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        run = {
            "edgead_version": __version__,
            "detector": detector.name,
            "modality": detector.modality,
            "config": to_dict(detector.config),
            "describe": detector.describe(),
            **meta,
        }
        (tmp / RUN_JSON).write_text(json.dumps(run, indent=2) + "\n")
        if split is not None:
            (tmp / SPLIT_JSON).write_text(json.dumps(split.to_dict()) + "\n")
        arrays: dict[str, Any] = detector.state_arrays()
        with open(tmp / STATE_NPZ, "wb") as fh:
            np.savez(fh, **arrays)
        backup = None
        if out_dir.exists():
            backup = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(out_dir, backup)
        os.replace(tmp, out_dir)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def read_run_meta(run_dir: str | Path) -> dict[str, Any]:
    """The parsed run.json of `run_dir` (DataError when it is not a run)."""
    path = Path(run_dir) / RUN_JSON
    if not path.is_file():
        raise DataError(
            f"{run_dir} is not an edgead run (no {RUN_JSON}); train one with `edgead train`"
        )
    try:
        meta: dict[str, Any] = json.loads(path.read_text())
        return meta
    except ValueError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from exc


def load_run(run_dir: str | Path) -> tuple[BaseDetector, dict[str, Any]]:
    """The fitted detector and the run metadata stored in `run_dir`."""
    meta = read_run_meta(run_dir)
    detector = create_detector(meta["detector"], meta["config"])
    try:
        with np.load(Path(run_dir) / STATE_NPZ, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{run_dir}/{STATE_NPZ} cannot be read: {exc}") from exc
    detector.load_state_arrays(arrays)
    return detector, meta


def load_split(run_dir: str | Path) -> RunSplit | None:
    """The held-out split stored in `run_dir`, or None for a run saved before splits were stored.

    Raises:
        DataError: split.json exists but cannot be parsed or validated.
    """
    path = Path(run_dir) / SPLIT_JSON
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} cannot be read: {exc}") from exc
    return RunSplit.from_dict(data, str(path))
