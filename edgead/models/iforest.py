"""Isolation Forest for tabular rows (registry name "iforest").

Fitting uses scikit-learn's `IsolationForest` on the raw rows (trees are invariant to per-column
scaling, so no standardisation). The fitted trees are then kept as padded node arrays, and both
`score` and the exported graph walk those arrays; scikit-learn is not needed after `fit`.

Score convention: `-IsolationForest.score_samples(rows)`, i.e. the anomaly score of the
original paper, s(x) = 2 ** (-E[h(x)] / c(max_samples)) in (0, 1], higher = more anomalous.
(PyOD's `IForest.decision_function` is this minus a constant offset, so rankings are the same.)

State arrays, T trees padded to M nodes (padding and leaves: feature 0, children = the node
itself, so a walk that reaches a leaf stays there):
    feature        int64 (T, M)    column tested at the node
    threshold      float32 (T, M)  go left when x[feature] <= threshold; scikit-learn's float64
                                   threshold rounded *down* to float32, which gives the same
                                   decisions on float32 rows as scikit-learn's x <= t64
    children_left, children_right  int64 (T, M)  node index within the tree
    n_node_samples int64 (T, M)    training samples that reached the node (0 for padding)
    leaf_value     float64 (T, M)  depth(node) + c(n_node_samples(node)) (path-length correction)
    norm           float64 ()      c(max_samples) = the normaliser of the mean path length
    max_depth      int64 ()        steps the walk needs (deepest leaf)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from edgead.errors import ConfigError, DataError
from edgead.models.base import (
    BaseDetector,
    ExportSpec,
    Progress,
    ScoreOutput,
    no_progress,
    register_detector,
)
from edgead.ops.rows import check_rows

logger = logging.getLogger(__name__)

_ARRAY_KEYS = (
    "feature",
    "threshold",
    "children_left",
    "children_right",
    "n_node_samples",
    "leaf_value",
    "norm",
    "max_depth",
)


@dataclass(frozen=True, kw_only=True)
class IForestConfig:
    """Isolation Forest settings (passed to scikit-learn).

    n_estimators: trees. max_samples: rows drawn per tree, capped at N (256 = sklearn "auto").
    max_features: share of columns each tree may use (1.0 = all).
    """

    n_estimators: int = 100
    max_samples: int = 256
    max_features: float = 1.0

    def validate(self) -> None:
        """ConfigError on out-of-range values."""
        if self.n_estimators < 1 or self.max_samples < 2 or not 0 < self.max_features <= 1:
            raise ConfigError(
                f"IForestConfig: need n_estimators >= 1, max_samples >= 2, "
                f"0 < max_features <= 1; got {self}"
            )


def average_path_length(n: np.ndarray) -> np.ndarray:
    """c(n): mean path length of an unsuccessful BST search over n samples (float64, like n).

    c(n) = 0 for n <= 1, 1 for n == 2, else 2 (ln(n - 1) + gamma) - 2 (n - 1) / n.
    """
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    big = n > 2
    out[n == 2] = 1.0
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


def _round_down_f32(values: np.ndarray) -> np.ndarray:
    """float32 array t32 with t32 <= values and no float32 strictly between (values float64)."""
    t32 = values.astype(np.float32)
    over = t32.astype(np.float64) > values
    t32[over] = np.nextafter(t32[over], np.float32(-np.inf))
    return t32


def forest_arrays(model: Any, n_features: int) -> dict[str, np.ndarray]:
    """Padded node arrays (see module docstring) from a fitted sklearn IsolationForest."""
    trees = [est.tree_ for est in model.estimators_]
    n_trees, width = len(trees), max(t.node_count for t in trees)
    feature = np.zeros((n_trees, width), dtype=np.int64)
    threshold = np.zeros((n_trees, width), dtype=np.float32)
    left = np.tile(np.arange(width, dtype=np.int64), (n_trees, 1))
    right = left.copy()
    counts = np.zeros((n_trees, width), dtype=np.int64)
    depth = np.zeros((n_trees, width), dtype=np.int64)
    subsample = model._max_features != n_features  # sklearn subsets X only in that case
    for t, (tree, cols) in enumerate(zip(trees, model.estimators_features_, strict=True)):
        n = tree.node_count
        is_split = tree.children_left[:n] >= 0
        feats = tree.feature[:n].astype(np.int64)
        if subsample:
            feats = np.where(is_split, np.asarray(cols)[np.maximum(feats, 0)], 0)
        feature[t, :n] = np.where(is_split, feats, 0)
        threshold[t, :n] = np.where(is_split, _round_down_f32(tree.threshold[:n]), 0.0)
        left[t, :n] = np.where(is_split, tree.children_left[:n], np.arange(n))
        right[t, :n] = np.where(is_split, tree.children_right[:n], np.arange(n))
        counts[t, :n] = tree.n_node_samples[:n]
        for node in range(n):  # parents come before children in sklearn's node order
            if is_split[node]:
                depth[t, tree.children_left[node]] = depth[t, node] + 1
                depth[t, tree.children_right[node]] = depth[t, node] + 1
    leaf_value = depth + average_path_length(counts)
    is_leaf = left == np.arange(width)[None, :]
    max_depth = int(depth[is_leaf & (counts > 0)].max())
    norm = float(average_path_length(np.array([model.max_samples_]))[0])
    return {
        "feature": feature,
        "threshold": threshold,
        "children_left": left,
        "children_right": right,
        "n_node_samples": counts,
        "leaf_value": leaf_value,
        "norm": np.array(norm),
        "max_depth": np.array(max_depth, dtype=np.int64),
    }


class IForestGraph(nn.Module):
    """Export-safe forest walk: Gather / GatherElements / LessOrEqual / Where, `max_depth` steps.

    forward(rows float32 (B, D) raw) -> (scores float32 (B,),), scores = 2 ** (-mean path / c).
    """

    offsets: torch.Tensor  # buffer
    feature: torch.Tensor  # buffer
    threshold: torch.Tensor  # buffer
    left: torch.Tensor  # buffer
    right: torch.Tensor  # buffer
    leaf_value: torch.Tensor  # buffer

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        super().__init__()
        n_trees, width = arrays["feature"].shape
        offsets = (np.arange(n_trees, dtype=np.int64) * width)[:, None]
        self.max_depth = int(arrays["max_depth"])
        self.register_buffer("offsets", torch.from_numpy(offsets[:, 0].copy()))
        self.register_buffer("feature", torch.from_numpy(arrays["feature"].reshape(-1).copy()))
        self.register_buffer("threshold", torch.from_numpy(arrays["threshold"].reshape(-1).copy()))
        self.register_buffer(
            "left", torch.from_numpy((arrays["children_left"] + offsets).reshape(-1))
        )
        self.register_buffer(
            "right", torch.from_numpy((arrays["children_right"] + offsets).reshape(-1))
        )
        self.register_buffer(
            "leaf_value", torch.from_numpy(arrays["leaf_value"].reshape(-1).astype(np.float32))
        )
        self.scale = float(math.log(2.0) / (n_trees * float(arrays["norm"])))

    def forward(self, rows: torch.Tensor) -> tuple[torch.Tensor]:
        """Scores (B,) float32 for raw rows (B, D) float32."""
        node = self.offsets.unsqueeze(0).expand(rows.shape[0], -1)  # (B, T) flat node index
        for _ in range(self.max_depth):
            values = torch.gather(rows, 1, self.feature[node])
            node = torch.where(values <= self.threshold[node], self.left[node], self.right[node])
        path = self.leaf_value[node].sum(dim=1)
        return (torch.exp(-path * self.scale),)


@register_detector("iforest")
class IForest(BaseDetector):
    """Isolation Forest; score = -sklearn score_samples = 2 ** (-E[h(x)] / c(psi))."""

    modality = "tabular"
    config_cls = IForestConfig

    def __init__(self, config: IForestConfig) -> None:
        super().__init__(config)
        self.arrays: dict[str, np.ndarray] | None = None
        self.n_features = 0
        self.sklearn_model: Any = None  # the fitted sklearn forest (after fit only; not state)

    @property
    def is_fitted(self) -> bool:
        """True once fit ran or state was loaded."""
        return self.arrays is not None

    def _arrays(self) -> dict[str, np.ndarray]:
        if self.arrays is None:
            self.check_is_fitted()
            raise RuntimeError("unreachable")
        return self.arrays

    def fit(self, data: Any, *, seed: int = 0, progress: Progress = no_progress) -> None:
        """Fit scikit-learn's IsolationForest (random_state=seed) on raw float32 rows (N, D)."""
        from sklearn.ensemble import IsolationForest

        rows = check_rows(data)
        if rows.shape[0] < 2:
            raise DataError(f"iforest needs at least 2 training rows, got {rows.shape[0]}")
        cfg = self.config
        model = IsolationForest(
            n_estimators=cfg.n_estimators,
            max_samples=min(cfg.max_samples, rows.shape[0]),
            max_features=cfg.max_features,
            random_state=seed,
        )
        model.fit(rows)
        progress(1, 1, "iforest")
        self.arrays = forest_arrays(model, rows.shape[1])
        self.n_features = rows.shape[1]
        self.sklearn_model = model

    def score(self, data: Any, progress: Progress = no_progress) -> ScoreOutput:
        """Scores float32 (N,) in (0, 1] for raw rows (N, D), by walking the node arrays."""
        arrays = self._arrays()
        rows = check_rows(data, self.n_features)
        n_trees, width = arrays["feature"].shape
        offsets = np.arange(n_trees, dtype=np.int64) * width
        feature = arrays["feature"].reshape(-1)
        threshold = arrays["threshold"].reshape(-1)
        left = (arrays["children_left"] + offsets[:, None]).reshape(-1)
        right = (arrays["children_right"] + offsets[:, None]).reshape(-1)
        leaf_value = arrays["leaf_value"].reshape(-1)
        out = np.empty(rows.shape[0], dtype=np.float32)
        step = 4096
        for start in range(0, rows.shape[0], step):
            chunk = rows[start : start + step]
            node = np.broadcast_to(offsets, (chunk.shape[0], n_trees)).copy()
            for _ in range(int(arrays["max_depth"])):
                values = np.take_along_axis(chunk, feature[node], axis=1)
                node = np.where(values <= threshold[node], left[node], right[node])
            path = leaf_value[node].mean(axis=1)
            out[start : start + step] = np.exp2(-path / float(arrays["norm"]))
            progress(min(start + step, rows.shape[0]), rows.shape[0], "iforest score")
        return ScoreOutput(scores=out)

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The node arrays listed in the module docstring plus n_features."""
        arrays = dict(self._arrays())
        arrays["n_features"] = np.array(self.n_features, dtype=np.int64)
        return arrays

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore the forest from `state_arrays` output."""
        missing = [k for k in (*_ARRAY_KEYS, "n_features") if k not in arrays]
        if missing:
            raise DataError(f"iforest state lacks {', '.join(missing)}; was it written by iforest?")
        self.arrays = {k: np.asarray(arrays[k]) for k in _ARRAY_KEYS}
        self.n_features = int(arrays["n_features"])

    def export_spec(self) -> ExportSpec:
        """IForestGraph over the node arrays: raw rows (B, D) -> ("score",) (B,)."""
        arrays = self._arrays()
        example = np.zeros((2, self.n_features), dtype=np.float32)
        return ExportSpec(
            module=IForestGraph(arrays).eval(),
            example_input=example,
            input_name="rows",
            output_names=("score",),
            postprocess={"kind": "rows"},
        )

    def describe(self) -> dict[str, Any]:
        """Tree count, padded node count and walk depth."""
        if self.arrays is None:
            return {}
        n_trees, width = self.arrays["feature"].shape
        return {
            "n_trees": int(n_trees),
            "nodes_per_tree": int(width),
            "max_depth": int(self.arrays["max_depth"]),
        }
