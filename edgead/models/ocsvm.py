"""One-Class SVM with an RBF kernel for tabular rows (registry name "ocsvm").

Exact ("approximation" = "exact"): scikit-learn `OneClassSVM(kernel="rbf", nu, gamma, tol)` on the
standardised normal rows. Score = `-decision_function(x)` = -(sum_i a_i exp(-gamma ||z - s_i||^2)
- rho), higher = more anomalous (PyOD `OCSVM.decision_function` has the same sign convention).
gamma = 0 means scikit-learn's "scale": 1 / (D * var(z)) over all standardised entries.

Nystroem ("approximation" = "nystroem", for large training sets): scikit-learn `Nystroem(kernel=
"rbf", gamma, n_components, random_state=seed)` features followed by a linear
`SGDOneClassSVM(nu, random_state=seed)`. Its decision function folds into the same kernel
expansion, with the Nystroem landmarks l_j as centres and weights w = normalization_^T coef_:
-(sum_j w_j exp(-gamma ||z - l_j||^2) - offset). So both variants export as one graph:
squared distances by the expansion (clamped at 0), Exp, MatVec, Sub.

State: centres (S, D) float32 (support vectors or landmarks), weights (S,) float64,
intercept () float64 (the constant added to the expansion: -rho, or -offset), gamma () float64.
"""

from __future__ import annotations

import logging
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
    sq_dists,
    sq_dists_np,
)
from edgead.models.base import ExportSpec, register_detector

logger = logging.getLogger(__name__)

APPROXIMATIONS = ("exact", "nystroem")


@dataclass(frozen=True, kw_only=True)
class OCSVMConfig:
    """One-Class SVM settings.

    nu: upper bound on the share of training outliers / lower bound on support vectors (0, 1].
    gamma: RBF width (standardised units^-2); 0 = "scale" (1 / (D var(z))).
    approximation: "exact" (libsvm) or "nystroem" (n_components landmarks + SGD linear OCSVM).
    n_components: Nystroem landmarks (capped at the number of training rows).
    tol: libsvm stopping tolerance (exact only). max_iter: SGD epochs (nystroem only).
    """

    nu: float = 0.5
    gamma: float = 0.0
    approximation: str = "exact"
    n_components: int = 300
    tol: float = 1e-3
    max_iter: int = 1000

    def validate(self) -> None:
        """ConfigError on out-of-range values."""
        if (
            not 0 < self.nu <= 1
            or self.gamma < 0
            or self.approximation not in APPROXIMATIONS
            or self.n_components < 1
            or self.tol <= 0
            or self.max_iter < 1
        ):
            raise ConfigError(
                f"OCSVMConfig: need 0 < nu <= 1, gamma >= 0, approximation in "
                f"{APPROXIMATIONS}, n_components >= 1, tol > 0, max_iter >= 1; "
                f"got {self}"
            )


class RBFExpansionScorer(nn.Module):
    """Standardised rows (B, D) -> -(sum_j w_j exp(-gamma ||z - c_j||^2) + b) (B,). Export-safe."""

    centres: torch.Tensor  # buffer
    centres_sq: torch.Tensor  # buffer
    weights: torch.Tensor  # buffer

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        super().__init__()
        centres = np.asarray(arrays["centres"], dtype=np.float64)
        self.register_buffer("centres", as_buffer(centres))
        self.register_buffer("centres_sq", as_buffer((centres * centres).sum(1)))
        self.register_buffer("weights", as_buffer(arrays["weights"]))
        self.gamma = float(arrays["gamma"])
        self.intercept = float(arrays["intercept"])

    def forward(self, scaled: torch.Tensor) -> torch.Tensor:
        """scaled float32 (B, D) -> scores float32 (B,)."""
        kernel = torch.exp(-self.gamma * sq_dists(scaled, self.centres, self.centres_sq))
        return -(kernel @ self.weights + self.intercept)


@register_detector("ocsvm")
class OCSVM(ClassicalDetector):
    """RBF One-Class SVM (exact or Nystroem); score = -decision_function."""

    config_cls = OCSVMConfig

    def _fit_scaled(self, scaled: np.ndarray, seed: int) -> dict[str, np.ndarray]:
        cfg = self.config
        x = scaled.astype(np.float64)
        var = float(x.var())
        gamma = cfg.gamma if cfg.gamma > 0 else 1.0 / (x.shape[1] * var if var > 0 else 1.0)
        if cfg.approximation == "exact":
            from sklearn.svm import OneClassSVM

            if len(x) > 20000:
                logger.warning(
                    "OCSVM: exact fit on %d rows is slow (quadratic memory/time); "
                    "consider approximation = 'nystroem'",
                    len(x),
                )
            model = OneClassSVM(kernel="rbf", nu=cfg.nu, gamma=gamma, tol=cfg.tol).fit(x)
            centres = model.support_vectors_
            weights = model.dual_coef_.ravel()
            intercept = float(model.intercept_[0])
        else:
            from sklearn.kernel_approximation import Nystroem
            from sklearn.linear_model import SGDOneClassSVM

            n_comp = min(cfg.n_components, len(x))
            feats = Nystroem(kernel="rbf", gamma=gamma, n_components=n_comp, random_state=seed)
            z = feats.fit_transform(x)
            svm = SGDOneClassSVM(nu=cfg.nu, max_iter=cfg.max_iter, random_state=seed).fit(z)
            centres = feats.components_
            weights = feats.normalization_.T @ svm.coef_.ravel()
            intercept = -float(svm.offset_[0])
        logger.info("OCSVM (%s): %d centres, gamma %.4g", cfg.approximation, len(centres), gamma)
        return {
            "centres": np.ascontiguousarray(centres, dtype=np.float32),
            "weights": np.asarray(weights, dtype=np.float64),
            "intercept": np.array(intercept, dtype=np.float64),
            "gamma": np.array(gamma, dtype=np.float64),
        }

    def _score_scaled(self, scaled: np.ndarray) -> np.ndarray:
        a = self.model_arrays
        centres = a["centres"].astype(np.float64)  # type: ignore[index]
        gamma, intercept = float(a["gamma"]), float(a["intercept"])  # type: ignore[index]
        out = np.empty(len(scaled), dtype=np.float64)
        for part in chunks(len(scaled)):
            kernel = np.exp(-gamma * sq_dists_np(scaled[part], centres))
            out[part] = -(kernel @ a["weights"] + intercept)  # type: ignore[index]
        return out

    def export_spec(self) -> ExportSpec:
        """Graph: standardise -> RBF kernel expansion -> ("score",)."""
        self.check_is_fitted()
        scorer = RBFExpansionScorer(self.model_arrays)  # type: ignore[arg-type]
        return ExportSpec(
            module=StandardizedGraph(self.standardizer, scorer).eval(),  # type: ignore
            example_input=self._example_input(),
            input_name="rows",
            output_names=("score",),
            postprocess={"kind": "rows"},
        )

    def describe(self) -> dict[str, Any]:
        """Number of kernel centres (support vectors or landmarks) and gamma."""
        if not self.is_fitted:
            return {}
        return {
            "approximation": self.config.approximation,
            "n_centres": int(self.model_arrays["centres"].shape[0]),  # type: ignore[index]
            "gamma": float(self.model_arrays["gamma"]),
        }  # type: ignore[index]
