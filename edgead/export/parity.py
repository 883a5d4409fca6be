"""Parity between the torch reference and an exported graph: errors measured; mismatch refused."""

from __future__ import annotations

import numpy as np

from edgead.errors import ExportError
from edgead.runtime.reference import max_errors

#: max relative error (max |graph - torch| / max |torch|) allowed per precision, graph outputs.
GRAPH_TOLERANCE = {"fp32": 1e-4, "fp16": 5e-2}
#: max relative error per image score (|graph - torch| / |torch|), after search and post-processing.
SCORE_TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2}


def relative_error(actual: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """(max abs error, max abs error / max |expected|) between two arrays of equal shape."""
    try:
        return max_errors(actual, expected)
    except ValueError as exc:
        raise ExportError(f"shape mismatch: exported vs torch: {exc}") from exc


def check_graph_parity(
    graph: dict[str, np.ndarray], reference: dict[str, np.ndarray], precision: str, backend: str
) -> dict[str, dict[str, float]]:
    """Per-output {max_abs_err, max_rel_err, tolerance}; ExportError naming the output if off."""
    tolerance = GRAPH_TOLERANCE[precision]
    report: dict[str, dict[str, float]] = {}
    for name, expected in reference.items():
        if name not in graph:
            raise ExportError(f"{backend}: the exported graph has no output '{name}'")
        abs_err, rel_err = relative_error(graph[name], expected)
        report[name] = {"max_abs_err": abs_err, "max_rel_err": rel_err, "tolerance": tolerance}
        if not np.isfinite(rel_err) or rel_err > tolerance:
            raise ExportError(
                f"parity check failed on {backend}: output '{name}' differs from torch by "
                f"max abs {abs_err:.3g} (relative {rel_err:.3g}, tolerance {tolerance:g} for "
                f"{precision}); the graph does not reproduce the model, so nothing was written"
            )
    return report


def check_score_parity(
    scores: np.ndarray, reference: np.ndarray, precision: str, backend: str
) -> dict[str, float]:
    """{max_rel_err, tolerance} of per-image scores; ExportError on mismatch."""
    tolerance = SCORE_TOLERANCE[precision]
    scores = np.asarray(scores, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    # Relative per item, with a floor at 1 % of the largest |score| so that scores near zero
    # (OCSVM, KDE and GMM scores cross zero) are not judged by a vanishing denominator.
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    rel = np.abs(scores - reference) / np.maximum(np.abs(reference), max(1e-2 * scale, 1e-12))
    worst = float(rel.max()) if rel.size else 0.0
    if not np.isfinite(worst) or worst > tolerance:
        i = int(np.nanargmax(rel))
        raise ExportError(
            f"parity check failed on {backend}: output 'score' of item {i} is {scores[i]:.6g} vs "
            f"torch {reference[i]:.6g} (relative error {worst:.3g}, tolerance {tolerance:g} for "
            f"{precision}); nothing was written"
        )
    return {"max_rel_err": worst, "tolerance": tolerance}
