"""Local outlier factor for tabular rows (registry name "lof").

scikit-learn `LocalOutlierFactor(n_neighbors=k, novelty=True)` semantics over standardised rows,
score = `-score_samples` (PyOD `LOF.decision_function`); neighbour search, self-match handling
and export are shared with kNN and described in edgead/models/knn.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgead.errors import ConfigError
from edgead.models.base import register_detector
from edgead.models.knn import NeighborDetector


@dataclass(frozen=True, kw_only=True)
class LOFConfig:
    """LOF settings: k neighbours (scikit-learn's n_neighbors; 20 as in scikit-learn and PyOD)."""

    k: int = 20

    def validate(self) -> None:
        """ConfigError on out-of-range values."""
        if self.k < 1:
            raise ConfigError(f"LOFConfig: need k >= 1; got k={self.k}")


@register_detector("lof")
class LOF(NeighborDetector):
    """Local outlier factor (scikit-learn novelty semantics) over standardised rows."""

    config_cls = LOFConfig
    method = "lof"
