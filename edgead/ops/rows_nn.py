"""Scores of the nearest-neighbour tabular detectors (kNN, LOF) from an index search. Torch-free.

Post-processing kind "rows_nn_index" (see docs/ARCHITECTURE.md): the exported graph standardises
raw rows and returns ("embedding",) float32 (B, D); the bundle's faiss index holds the standardised
training rows; this module turns the neighbour search into scores, higher = more anomalous:

    {"kind": "rows_nn_index", "k": k, "method": "largest" | "mean" | "lof",
     "lof": null | {"k_distance": "k_distance", "lrd": "lrd", "eps": 1e-10}}

- "largest": Euclidean distance (L2, not squared) to the k-th nearest training row
  (PyOD ``KNN(method="largest")``).
- "mean": mean L2 distance to the k nearest training rows (PyOD ``KNN(method="mean")``).
- "lof": local outlier factor of scikit-learn's ``LocalOutlierFactor(novelty=True)``, i.e.
  ``-score_samples`` (PyOD ``LOF.decision_function``). With neighbours p of x (k nearest training
  rows), reach(x, p) = max(k_distance[p], d(x, p)), lrd(x) = 1 / (mean_p reach(x, p) + eps) and
  LOF(x) = mean_p lrd[p] / lrd(x). `k_distance` (M,) and `lrd` (M,) are bundle arrays (named in
  "lof"), computed on the training rows with each row's own entry excluded.

The rows scored here are *new* rows: no neighbour is dropped, so a row equal to a training row
has distance 0 to it. Scores of the training rows themselves (self excluded) are computed at fit
time (`edgead.models.knn`), never here.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from edgead.errors import BundleError

METHODS = ("largest", "mean", "lof")
LOF_EPS = 1e-10


class _Searcher(Protocol):
    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]: ...


def check_postprocess(postprocess: dict[str, Any]) -> tuple[int, str]:
    """(k, method) from a "rows_nn_index" post-processing dict; BundleError when malformed."""
    try:
        k = int(postprocess["k"])
        method = str(postprocess["method"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(
            f"rows_nn_index post-processing needs integer 'k' and 'method'; got {postprocess!r}"
        ) from exc
    if k < 1 or method not in METHODS:
        raise BundleError(
            f"rows_nn_index: k must be >= 1 and method one of {', '.join(METHODS)}; "
            f"got k={k}, method={method!r}; re-export with this edgead version"
        )
    if method == "lof" and not isinstance(postprocess.get("lof"), dict):
        raise BundleError(
            "rows_nn_index method 'lof' needs a 'lof' entry naming the "
            "k_distance and lrd arrays; re-export the bundle"
        )
    return k, method


def scores_from_neighbors(
    distances: np.ndarray,
    ids: np.ndarray,
    postprocess: dict[str, Any],
    arrays: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Anomaly scores of N new rows from their k nearest training rows.

    Args:
        distances: float (N, k) Euclidean distances (L2, not squared), ascending per row, as
            returned by `edgead.ops.nn_index.FaissIndex.search`.
        ids: int64 (N, k) training-row indices of those neighbours (needed for "lof").
        postprocess: the manifest's {"kind": "rows_nn_index", "k", "method", "lof"} dict.
        arrays: bundle arrays; for "lof" the float (M,) arrays named by postprocess["lof"].

    Returns:
        float64 (N,), higher = more anomalous (units: L2 in standardised feature units for
        "largest"/"mean"; a unitless ratio, about 1 for inliers, for "lof").

    Raises:
        BundleError: malformed post-processing, fewer than k neighbours, missing ids (-1) or
            missing/mis-sized LOF arrays.
    """
    k, method = check_postprocess(postprocess)
    dist = np.asarray(distances, dtype=np.float64)
    if dist.ndim != 2 or dist.shape[1] < k:
        raise BundleError(f"rows_nn_index needs (N, {k}) neighbour distances; got {dist.shape}")
    dist = dist[:, :k]
    if method == "largest":
        return dist[:, k - 1].copy()
    if method == "mean":
        return np.asarray(dist.mean(axis=1))
    spec = postprocess["lof"]
    arrays = arrays or {}
    try:
        k_distance = np.asarray(arrays[spec.get("k_distance", "k_distance")], dtype=np.float64)
        lrd_train = np.asarray(arrays[spec.get("lrd", "lrd")], dtype=np.float64)
    except KeyError as exc:
        raise BundleError(
            f"LOF scoring needs the bundle array {exc}; re-export the bundle"
        ) from exc
    neighbors = np.asarray(ids, dtype=np.int64)[:, :k]
    if neighbors.shape != dist.shape:
        raise BundleError(f"neighbour ids {neighbors.shape} do not match distances {dist.shape}")
    if (neighbors < 0).any() or (neighbors >= k_distance.shape[0]).any():
        raise BundleError(
            f"the index returned neighbour ids outside 0..{k_distance.shape[0] - 1} "
            "(fewer stored rows than k?); the bundle's index and arrays disagree"
        )
    eps = float(spec.get("eps", LOF_EPS))
    reach = np.maximum(dist, k_distance[neighbors])
    lrd = 1.0 / (reach.mean(axis=1) + eps)
    return np.asarray((lrd_train[neighbors] / lrd[:, None]).mean(axis=1))


def score_rows_nn(
    index: _Searcher,
    embeddings: np.ndarray,
    postprocess: dict[str, Any],
    arrays: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Search `index` for the k nearest training rows of each embedding and score them.

    Args:
        index: an `edgead.ops.nn_index.FaissIndex` over the standardised training rows.
        embeddings: float32 (N, D) standardised rows (the graph's "embedding" output).
        postprocess, arrays: as for `scores_from_neighbors`.

    Returns:
        float64 (N,) scores, higher = more anomalous.
    """
    k, _ = check_postprocess(postprocess)
    queries = np.ascontiguousarray(
        np.asarray(embeddings).reshape(len(embeddings), -1), dtype=np.float32
    )
    distances, ids = index.search(queries, k)
    return scores_from_neighbors(distances, ids, postprocess, arrays)
