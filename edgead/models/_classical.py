"""Shared plumbing of the classical tabular detectors (knn, lof, kde, gmm, ocsvm).

Every classical detector standardises rows with `Standardizer` (fitted on the normal training
rows; edgead/models/_tabular.py), fits its model on the standardised rows z and keeps its fitted
state as plain numpy arrays (prefix "m."), so `score` needs neither scikit-learn nor pickles.

Export-safe maths for the graphs lives here too: `sq_dists` (squared Euclidean distances by the
expansion ||x||^2 + ||c||^2 - 2 x.c with a clamp at 0, no `torch.cdist`) and `neg_logsumexp`
(max-shifted, written with ReduceMax / Exp / ReduceSum / Log so it runs on ONNX Runtime, OpenVINO
and TensorRT alike).
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from edgead.errors import DataError
from edgead.models._tabular import Standardizer
from edgead.models.base import BaseDetector, Progress, ScoreOutput, no_progress
from edgead.ops.rows import check_rows

logger = logging.getLogger(__name__)

#: Query rows per chunk in numpy scoring (bounds the (chunk, M) distance matrix).
CHUNK_ROWS = 512


class ClassicalDetector(BaseDetector):
    """Fit/score/state plumbing; subclasses implement `_fit_scaled`, `_score_scaled`, export."""

    modality = "tabular"
    #: smallest number of training rows the model accepts (subclasses raise it, e.g. k + 1).
    min_train_rows: int = 2

    def __init__(self, config: Any) -> None:
        config.validate()
        super().__init__(config)
        self.standardizer: Standardizer | None = None
        self.model_arrays: dict[str, np.ndarray] | None = None

    @property
    def is_fitted(self) -> bool:
        """True once `fit` ran or state was loaded."""
        return self.model_arrays is not None and self.standardizer is not None

    @property
    def n_features(self) -> int:
        """Number of feature columns D seen in training."""
        self.check_is_fitted()
        return int(self.standardizer.mean.shape[0])  # type: ignore[union-attr]

    def _required_rows(self) -> int:
        return self.min_train_rows

    def fit(self, data: Any, *, seed: int = 0, progress: Progress = no_progress) -> None:
        """Fit on normal rows float32 (N, D); raises DataError for bad or too few rows."""
        rows = check_rows(data)
        need = self._required_rows()
        if rows.shape[0] < need:
            raise DataError(
                f"{self.name}: {rows.shape[0]} training row(s) but at least {need} "
                f"are needed ({self._why_min_rows()}); {self._min_rows_fix()}"
            )
        progress(0, 2, self.name)
        std = Standardizer.fit(rows)
        arrays = self._fit_scaled(std.transform(rows), seed)
        self.standardizer, self.model_arrays = std, arrays
        self._on_state_loaded()
        progress(2, 2, self.name)

    def _why_min_rows(self) -> str:
        return "the model needs at least two rows"

    def _min_rows_fix(self) -> str:
        return "add normal rows"

    def score(self, data: Any, progress: Progress = no_progress) -> ScoreOutput:
        """Raw scores float32 (N,) of rows float32 (N, D); higher = more anomalous."""
        self.check_is_fitted()
        rows = check_rows(data, self.n_features)
        scaled = self.standardizer.transform(rows)  # type: ignore[union-attr]
        scores = np.asarray(self._score_scaled(scaled), dtype=np.float64)
        return ScoreOutput(scores=scores.astype(np.float32))

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Standardizer arrays ("std.*") and the model arrays ("m.*")."""
        self.check_is_fitted()
        out = self.standardizer.state_arrays()  # type: ignore[union-attr]
        out.update({"m." + k: v for k, v in self.model_arrays.items()})  # type: ignore[union-attr]
        return out

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore state written by `state_arrays`."""
        self.standardizer = Standardizer.from_arrays(arrays)
        self.model_arrays = {k[2:]: np.asarray(v) for k, v in arrays.items() if k.startswith("m.")}
        self._on_state_loaded()

    def _on_state_loaded(self) -> None:
        """Hook: rebuild caches (e.g. a faiss index) after fit or load."""

    @abc.abstractmethod
    def _fit_scaled(self, scaled: np.ndarray, seed: int) -> dict[str, np.ndarray]:
        """Fit on standardised float32 (N, D) rows; return the model arrays."""

    @abc.abstractmethod
    def _score_scaled(self, scaled: np.ndarray) -> np.ndarray:
        """float64 (N,) scores of standardised float32 (N, D) rows."""

    def _example_input(self) -> np.ndarray:
        """float32 (2, D) rows for tracing: the training mean and mean + one std."""
        std = self.standardizer
        return np.stack([std.mean, std.mean + std.scale]).astype(np.float32)  # type: ignore


def chunks(n_rows: int, size: int = CHUNK_ROWS) -> Iterator[slice]:
    """Slices covering range(n_rows) in steps of `size`."""
    for start in range(0, n_rows, size):
        yield slice(start, min(start + size, n_rows))


def sq_dists_np(queries: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """float64 (N, M) squared Euclidean distances (L2^2), clamped at 0.

    Args:
        queries: (N, D); centres: (M, D). Computed in float64 by the expansion.
    """
    q = np.asarray(queries, dtype=np.float64)
    c = np.asarray(centres, dtype=np.float64)
    d2 = (q * q).sum(1)[:, None] + (c * c).sum(1)[None, :] - 2.0 * q @ c.T
    return np.maximum(d2, 0.0)


def logsumexp_np(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Max-shifted log(sum(exp(values))) along `axis` (float64)."""
    top = values.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(values - top).sum(axis=axis, keepdims=True))).squeeze(axis)


def sq_dists(
    queries: torch.Tensor, centres: torch.Tensor, centres_sq: torch.Tensor
) -> torch.Tensor:
    """Squared Euclidean distances (B, M) by the expansion, clamped at 0. Export-safe.

    Args:
        queries: float32 (B, D); centres: float32 (M, D); centres_sq: float32 (M,) = ||c||^2.
    """
    q_sq = (queries * queries).sum(dim=1, keepdim=True)
    d2 = q_sq + centres_sq.unsqueeze(0) - 2.0 * queries @ centres.t()
    return torch.clamp(d2, min=0.0)


def neg_logsumexp(values: torch.Tensor, offset: float = 0.0) -> torch.Tensor:
    """-(log(sum(exp(values), dim=1)) + offset) of (B, M) -> (B,), max-shifted.

    Ops: ReduceMax / Sub / Exp / ReduceSum / Log / Add / Neg, then Squeeze as the last op (with
    Squeeze before Neg, OpenVINO 2026.4 gives the output tensor two names and a runtime reading
    `get_any_name()` may not find "score").
    """
    top = torch.amax(values, dim=1, keepdim=True)
    lse = top + torch.log(torch.exp(values - top).sum(dim=1, keepdim=True))
    return (-(lse + offset)).squeeze(1)


class StandardizedGraph(nn.Module):
    """Export wrapper: raw rows (B, D) -> standardise -> `scorer` -> 1-tuple of its output.

    For kNN/LOF the scorer is the identity and the output is the "embedding" (B, D); for the
    other models it returns "score" (B,).
    """

    mean: torch.Tensor  # buffer
    scale: torch.Tensor  # buffer

    def __init__(self, standardizer: Standardizer, scorer: nn.Module | None = None) -> None:
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(standardizer.mean.copy()))
        self.register_buffer("scale", torch.from_numpy(standardizer.scale.copy()))
        self.scorer = scorer if scorer is not None else nn.Identity()

    def forward(self, rows: torch.Tensor) -> tuple[torch.Tensor]:
        """rows float32 (B, D) raw -> (output,)."""
        return (self.scorer((rows - self.mean) / self.scale),)


def as_buffer(array: np.ndarray) -> torch.Tensor:
    """float32 C-contiguous torch tensor copy of `array`."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32).copy())
