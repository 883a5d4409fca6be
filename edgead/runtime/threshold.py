"""Operating-point overrides at load time and the modality check (torch-free).

A bundle carries its threshold (raw-score units) and a normalisation {"min", "max",
"threshold"} that maps raw scores to [0, 1] with the threshold at 0.5. An operator turns the
knob without re-exporting:

- `--threshold T`: raw units, as printed by `edgead predict` (raw_score).
- `--sensitivity S` in [0, 1]: 0.5 keeps the bundle's threshold; the raw threshold moves by
  (0.5 - S) * (max - min), so S = 1 flags what scored half a normal-score span below the
  calibrated threshold and S = 0 only what scored half a span above it.

Either way the normalisation is re-centred on the new threshold, so `score >= 0.5` and
`is_anomaly` keep meaning the same thing.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

from edgead.bundle import Manifest
from edgead.errors import ConfigError

logger = logging.getLogger(__name__)

MODALITIES = ("image", "tabular")


def check_modality(manifest: Manifest, expected: str | None, path: str | Path) -> None:
    """Raise ConfigError when the bundle's modality is not `expected` (None: any)."""
    if expected is None or manifest.modality == expected:
        return
    if expected not in MODALITIES:
        raise ConfigError(f"modality must be one of {MODALITIES}, got {expected!r}")
    if expected == "tabular" and manifest.modality == "timeseries":
        return  # sensor rows come as tables (CSV, JSON lines) too
    wants = "images" if expected == "image" else "table rows"
    has = "images" if manifest.modality == "image" else "table rows"
    raise ConfigError(
        f"{path} is a {manifest.modality} bundle ({manifest.detector}): it scores {has}, but "
        f"{wants} were given; use a {expected} bundle, or give it {has}"
    )


def threshold_from_sensitivity(manifest: Manifest, sensitivity: float) -> float:
    """Raw threshold for `sensitivity` in [0, 1] (0.5 = the bundle's own threshold).

    Raises:
        ConfigError: sensitivity outside [0, 1], or a bundle without threshold/normalisation.
    """
    if not (isinstance(sensitivity, (int, float)) and 0.0 <= float(sensitivity) <= 1.0):
        raise ConfigError(
            f"--sensitivity must be in [0, 1] (0.5 = as calibrated), got {sensitivity}"
        )
    norm = manifest.normalisation
    if manifest.threshold is None or not all(k in norm for k in ("min", "max")):
        raise ConfigError(
            "--sensitivity needs a calibrated bundle (threshold and normalisation); run "
            "`edgead calibrate` or give a raw --threshold"
        )
    span = float(norm["max"]) - float(norm["min"])
    span = span if span > 0 else 1.0
    return float(manifest.threshold) + (0.5 - float(sensitivity)) * span


def override_threshold(
    manifest: Manifest, threshold: float | None, sensitivity: float | None
) -> Manifest:
    """The manifest with its threshold replaced (raw `threshold`, or from `sensitivity`).

    The normalisation keeps its min/max (the normal-score span) and takes the new threshold.
    Uncalibrated bundles get min = max = threshold (span 1 in `normalise_scores`).

    Raises:
        ConfigError: both given, a non-finite threshold, or a bad sensitivity.
    """
    if threshold is not None and sensitivity is not None:
        raise ConfigError("give --threshold or --sensitivity, not both")
    if sensitivity is not None:
        value = threshold_from_sensitivity(manifest, sensitivity)
    else:
        value = float(threshold)  # type: ignore[arg-type]
        if not math.isfinite(value):
            raise ConfigError(f"--threshold must be a finite number, got {threshold}")
    norm = dict(manifest.normalisation)
    norm.setdefault("method", "minmax_threshold")
    norm.setdefault("min", value)
    norm.setdefault("max", value)
    norm["threshold"] = value
    logger.info(
        "decision threshold %s -> %.6g (%s)",
        "none" if manifest.threshold is None else f"{manifest.threshold:.6g}",
        value,
        "--threshold" if sensitivity is None else f"--sensitivity {sensitivity:g}",
    )
    return dataclasses.replace(manifest, threshold=value, normalisation=norm)
