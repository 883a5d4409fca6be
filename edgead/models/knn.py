"""Nearest-neighbour detectors for tabular rows: kNN distance ("knn"); LOF ("lof") in lof.py.

Both standardise rows (mean/std of the normal training rows) and search the standardised
training rows with `edgead.ops.nn_index.FaissIndex` (exact "Flat" L2 index), the same code the
runtime uses; `edgead.ops.rows_nn` turns the neighbours into scores, so a run and its bundle
compute scores the same way. Score semantics (higher = more anomalous):

- knn, method "largest": L2 distance to the k-th nearest training row (PyOD `KNN`, default);
  method "mean": mean L2 distance to the k nearest (PyOD `KNN(method="mean")`).
- lof: scikit-learn `LocalOutlierFactor(n_neighbors=k, novelty=True)`, score = `-score_samples`
  (the local outlier factor, about 1 for inliers; equals PyOD `LOF.decision_function`).

Self-matches: `score(rows)` treats rows as *new*: nothing is dropped, so a copy of a training row
has distance 0 to it. The training rows' own scores (`train_scores`, used e.g. to check a
threshold on training data) and the LOF statistics (k-distance and local reachability density of
every training row) are computed at fit time with scikit-learn's `kneighbors()` without a query,
which excludes each row's own entry (for duplicates: its own index, else the farthest candidate).

Export: the graph standardises raw rows and outputs ("embedding",) (B, D); postprocess
{"kind": "rows_nn_index", "k", "method", "lof"}; arrays "memory_bank" (standardised training rows,
float32 (M, D), becomes the faiss index) and, for LOF, "k_distance" and "lrd" float64 (M,).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgead.errors import ConfigError
from edgead.models._classical import ClassicalDetector, StandardizedGraph
from edgead.models.base import ExportSpec, register_detector
from edgead.ops.nn_index import FaissIndex
from edgead.ops.rows_nn import LOF_EPS, scores_from_neighbors

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class KNNConfig:
    """kNN distance settings: k neighbours; method "largest" (k-th distance) or "mean"."""

    k: int = 5
    method: str = "largest"

    def validate(self) -> None:
        """ConfigError on out-of-range values."""
        if self.k < 1 or self.method not in ("largest", "mean"):
            raise ConfigError(
                f"KNNConfig: need k >= 1 and method 'largest' or 'mean'; got "
                f"k={self.k}, method={self.method!r}"
            )


class NeighborDetector(ClassicalDetector):
    """Shared kNN/LOF code: memory bank of standardised rows + exact faiss index."""

    method: str

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._index: FaissIndex | None = None

    def _required_rows(self) -> int:
        return int(self.config.k) + 1

    def _why_min_rows(self) -> str:
        return f"k = {self.config.k} neighbours of each training row, which excludes the row itself"

    def _min_rows_fix(self) -> str:
        return "add normal rows or lower k"

    def _method(self) -> str:
        return self.method

    def _postprocess(self) -> dict[str, Any]:
        lof = (
            {"k_distance": "k_distance", "lrd": "lrd", "eps": LOF_EPS}
            if self._method() == "lof"
            else None
        )
        return {
            "kind": "rows_nn_index",
            "k": int(self.config.k),
            "method": self._method(),
            "lof": lof,
        }

    def _fit_scaled(self, scaled: np.ndarray, seed: int) -> dict[str, np.ndarray]:
        from sklearn.neighbors import NearestNeighbors

        k = int(self.config.k)
        bank = np.ascontiguousarray(scaled, dtype=np.float32)
        nn = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(bank.astype(np.float64))
        dist, ids = nn.kneighbors()  # X=None: each row's own entry is excluded
        arrays = {"memory_bank": bank, "k_distance": dist[:, k - 1].copy()}
        if self._method() == "lof":
            reach = np.maximum(dist, arrays["k_distance"][ids])
            lrd = 1.0 / (reach.mean(axis=1) + LOF_EPS)
            arrays["lrd"] = lrd
            arrays["train_scores"] = (lrd[ids] / lrd[:, None]).mean(axis=1)
        elif self._method() == "mean":
            arrays["train_scores"] = dist.mean(axis=1)
        else:
            arrays["train_scores"] = dist[:, k - 1].copy()
        return arrays

    def _on_state_loaded(self) -> None:
        bank = self.model_arrays["memory_bank"]  # type: ignore[index]
        self._index = FaissIndex.build(bank, "Flat")

    @property
    def train_scores(self) -> np.ndarray:
        """float64 (M,) scores of the training rows, each row's own entry excluded."""
        self.check_is_fitted()
        return self.model_arrays["train_scores"]  # type: ignore[index]

    def _score_scaled(self, scaled: np.ndarray) -> np.ndarray:
        distances, ids = self._index.search(scaled, int(self.config.k))  # type: ignore[union-attr]
        return scores_from_neighbors(distances, ids, self._postprocess(), self.model_arrays)

    def export_spec(self) -> ExportSpec:
        """Standardising graph -> ("embedding",); faiss search + rows_nn at run time."""
        self.check_is_fitted()
        arrays = {"memory_bank": self.model_arrays["memory_bank"]}  # type: ignore[index]
        if self._method() == "lof":
            arrays.update(
                {
                    name: self.model_arrays[name]  # type: ignore[index]
                    for name in ("k_distance", "lrd")
                }
            )
        return ExportSpec(
            module=StandardizedGraph(self.standardizer).eval(),  # type: ignore
            example_input=self._example_input(),
            input_name="rows",
            output_names=("embedding",),
            postprocess=self._postprocess(),
            arrays=arrays,
        )

    def describe(self) -> dict[str, Any]:
        """Memory-bank size and k."""
        if not self.is_fitted:
            return {}
        bank = self.model_arrays["memory_bank"]  # type: ignore[index]
        return {
            "n_memory_rows": int(bank.shape[0]),
            "dim": int(bank.shape[1]),
            "k": int(self.config.k),
            "method": self._method(),
        }


@register_detector("knn")
class KNN(NeighborDetector):
    """Distance to the k-th nearest (or mean of the k nearest) standardised training rows."""

    config_cls = KNNConfig

    def _method(self) -> str:
        return str(self.config.method)
