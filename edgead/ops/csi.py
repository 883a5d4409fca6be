"""CSI scoring (post-processing kind "csi_nn_index"): the one home of the score rule. Torch-free.

Graph outputs: "embedding" (B, 4, 4 D), the unit projection of rotation k placed in block k
(zeros elsewhere), and "norm" (B, 4), the projections' L2 norms. The bundle's exact (Flat) index
holds the training images' vectors of all four rotations, block-placed the same way, so the
nearest neighbour of a rotation-k query is a rotation-k training vector and, for unit vectors,
cos = 1 - L2^2 / 2. Score = - sum_k weights_k * max cos_k * norm_k (higher = more anomalous).
"""

from __future__ import annotations

from typing import Any

import numpy as np

ROTATIONS = 4


def csi_combine(best_cos: np.ndarray, norms: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """float64 (B,) anomaly scores from max cosine (B, 4), norms (B, 4) and weights (4,)."""
    terms = np.asarray(best_cos, np.float64) * np.asarray(norms, np.float64)
    return -(terms * np.asarray(weights, np.float64)[None, :]).sum(axis=1)


def csi_scores(
    index: Any, embedding: np.ndarray, norms: np.ndarray, postprocess: dict[str, Any]
) -> np.ndarray:
    """float32 (B,) CSI anomaly scores via nearest-neighbour search in `index`.

    Args:
        index: `edgead.ops.nn_index.FaissIndex` (search returns L2, not squared).
        embedding: float32 (B, 4, 4 D); norms: float32 (B, 4); postprocess: {"weights": [4]}.
    """
    n = embedding.shape[0]
    distances, _ = index.search(
        np.ascontiguousarray(embedding.reshape(n * ROTATIONS, -1), dtype=np.float32), 1
    )
    best_cos = (1.0 - distances[:, 0].astype(np.float64) ** 2 / 2.0).reshape(n, ROTATIONS)
    weights = np.asarray(postprocess["weights"], dtype=np.float64)
    return csi_combine(best_cos, norms.reshape(n, ROTATIONS), weights).astype(np.float32)
