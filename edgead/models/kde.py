"""Gaussian kernel density estimate for tabular rows (registry name "kde").

The density is fitted on the standardised normal training rows z_1..z_M (M = N, or a seeded
random subset of `max_rows` rows when N is larger, logged):

    log p(x) = logsumexp_i(-||z(x) - z_i||^2 / (2 h^2)) - log M - (D / 2) log(2 pi h^2)

score = -log p(x) (negative log density in standardised units; scikit-learn
`KernelDensity(kernel="gaussian", bandwidth=h).score_samples` negated, as PyOD `KDE` does).

Bandwidth h (standardised units, so per-column std = 1):
- "scott": h = M ** (-1 / (D + 4))  (Scott's rule for unit variance),
- "silverman": h = (M (D + 2) / 4) ** (-1 / (D + 4))  (Silverman's rule for unit variance),
- "cv": the h of a log grid (`cv_grid` values from 0.05 to 5 times Scott's h) with the best
  mean held-out log-likelihood in 5-fold cross-validation on the normal rows (scikit-learn
  `GridSearchCV`), rows subsampled to at most 2,000 for the search,
- a positive `bandwidth` overrides the rule.

Export: the graph computes squared distances by the expansion ||x'||^2 + ||c'||^2 - 2 x'.c' on rows
pre-scaled by 1/h (clamped at 0) and a max-shifted log-sum-exp, all float32 standard ops.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from edgead.errors import ConfigError
from edgead.models._classical import (
    ClassicalDetector,
    StandardizedGraph,
    as_buffer,
    chunks,
    logsumexp_np,
    neg_logsumexp,
    sq_dists,
    sq_dists_np,
)
from edgead.models.base import ExportSpec, register_detector

logger = logging.getLogger(__name__)

RULES = ("scott", "silverman", "cv")
_CV_MAX_ROWS = 2000


@dataclass(frozen=True, kw_only=True)
class KDEConfig:
    """KDE settings.

    bandwidth_rule: "scott" | "silverman" | "cv" (see module docstring).
    bandwidth: > 0 fixes h (standardised units) and ignores the rule; 0 = use the rule.
    max_rows: training rows kept as kernel centres (seeded random subset above it).
    cv_grid: number of candidate bandwidths for "cv".
    """

    bandwidth_rule: str = "scott"
    bandwidth: float = 0.0
    max_rows: int = 20000
    cv_grid: int = 20

    def validate(self) -> None:
        """ConfigError on out-of-range values."""
        if (
            self.bandwidth_rule not in RULES
            or self.bandwidth < 0
            or self.max_rows < 2
            or self.cv_grid < 2
        ):
            raise ConfigError(
                f"KDEConfig: need bandwidth_rule in {RULES}, bandwidth >= 0, "
                f"max_rows >= 2, cv_grid >= 2; got {self}"
            )


def rule_bandwidth(n_rows: int, n_features: int, rule: str) -> float:
    """Scott's or Silverman's bandwidth for unit-variance columns (float, standardised units)."""
    if rule == "scott":
        return float(n_rows ** (-1.0 / (n_features + 4)))
    return float((n_rows * (n_features + 2) / 4.0) ** (-1.0 / (n_features + 4)))


def cv_bandwidth(scaled: np.ndarray, n_grid: int, seed: int) -> float:
    """Bandwidth with the best 5-fold held-out log-likelihood (GridSearchCV over a log grid)."""
    from sklearn.model_selection import GridSearchCV, KFold
    from sklearn.neighbors import KernelDensity

    rng = np.random.default_rng(seed)
    rows = (
        scaled
        if len(scaled) <= _CV_MAX_ROWS
        else scaled[rng.choice(len(scaled), _CV_MAX_ROWS, replace=False)]
    )
    scott = rule_bandwidth(len(scaled), scaled.shape[1], "scott")
    grid = scott * np.logspace(math.log10(0.05), math.log10(5.0), n_grid)
    search = GridSearchCV(
        KernelDensity(kernel="gaussian"),
        {"bandwidth": grid},
        cv=KFold(n_splits=min(5, len(rows)), shuffle=True, random_state=seed),
    )
    search.fit(rows.astype(np.float64))
    best = float(search.best_params_["bandwidth"])
    if best in (grid[0], grid[-1]):
        logger.warning(
            "KDE cross-validation picked the edge of its bandwidth grid (h=%.4g); "
            "the optimum may lie outside [%.4g, %.4g]",
            best,
            grid[0],
            grid[-1],
        )
    return best


class KDEScorer(nn.Module):
    """Standardised rows (B, D) -> negative log density (B,) float32. Export-safe."""

    centres: torch.Tensor  # buffer
    centres_sq: torch.Tensor  # buffer

    def __init__(self, centres: np.ndarray, bandwidth: float) -> None:
        super().__init__()
        c = np.asarray(centres, dtype=np.float64) / bandwidth
        self.register_buffer("centres", as_buffer(c))
        self.register_buffer("centres_sq", as_buffer((c * c).sum(1)))
        self.inv_h = float(1.0 / bandwidth)
        m, d = centres.shape
        self.log_norm = float(-math.log(m) - 0.5 * d * math.log(2 * math.pi * bandwidth**2))

    def forward(self, scaled: torch.Tensor) -> torch.Tensor:
        """scaled float32 (B, D) -> scores float32 (B,)."""
        d2 = sq_dists(scaled * self.inv_h, self.centres, self.centres_sq)
        return neg_logsumexp(-0.5 * d2, self.log_norm)


@register_detector("kde")
class KDE(ClassicalDetector):
    """Gaussian KDE over standardised rows; score = negative log density."""

    config_cls = KDEConfig

    def _fit_scaled(self, scaled: np.ndarray, seed: int) -> dict[str, np.ndarray]:
        cfg = self.config
        centres = scaled
        if len(scaled) > cfg.max_rows:
            rng = np.random.default_rng(seed)
            keep = np.sort(rng.choice(len(scaled), cfg.max_rows, replace=False))
            centres = scaled[keep]
            logger.warning(
                "KDE: %d training rows; keeping a random %d as kernel centres (max_rows)",
                len(scaled),
                cfg.max_rows,
            )
        if cfg.bandwidth > 0:
            h = float(cfg.bandwidth)
        elif cfg.bandwidth_rule == "cv":
            h = cv_bandwidth(centres, cfg.cv_grid, seed)
        else:
            h = rule_bandwidth(len(centres), centres.shape[1], cfg.bandwidth_rule)
        logger.info(
            "KDE bandwidth h = %.4g (%s), %d centres",
            h,
            "fixed" if cfg.bandwidth > 0 else cfg.bandwidth_rule,
            len(centres),
        )
        return {
            "centres": np.ascontiguousarray(centres, dtype=np.float32),
            "bandwidth": np.array(h, dtype=np.float64),
        }

    @property
    def bandwidth(self) -> float:
        """Fitted bandwidth h (standardised units)."""
        self.check_is_fitted()
        return float(self.model_arrays["bandwidth"])  # type: ignore[index]

    def _score_scaled(self, scaled: np.ndarray) -> np.ndarray:
        centres = self.model_arrays["centres"].astype(np.float64)  # type: ignore[index]
        h = self.bandwidth
        m, d = centres.shape
        log_norm = -math.log(m) - 0.5 * d * math.log(2 * math.pi * h * h)
        out = np.empty(len(scaled), dtype=np.float64)
        for part in chunks(len(scaled)):
            d2 = sq_dists_np(scaled[part].astype(np.float64) / h, centres / h)
            out[part] = -(logsumexp_np(-0.5 * d2) + log_norm)
        return out

    def export_spec(self) -> ExportSpec:
        """Graph: standardise -> KDE log-sum-exp -> ("score",)."""
        self.check_is_fitted()
        scorer = KDEScorer(self.model_arrays["centres"], self.bandwidth)  # type: ignore[index]
        return ExportSpec(
            module=StandardizedGraph(self.standardizer, scorer).eval(),  # type: ignore
            example_input=self._example_input(),
            input_name="rows",
            output_names=("score",),
            postprocess={"kind": "rows"},
        )

    def describe(self) -> dict[str, Any]:
        """Bandwidth and number of kernel centres."""
        if not self.is_fitted:
            return {}
        return {
            "bandwidth": self.bandwidth,
            "n_centres": int(self.model_arrays["centres"].shape[0]),
        }  # type: ignore[index]
