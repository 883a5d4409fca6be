"""Gaussian mixture model for tabular rows (registry name "gmm").

scikit-learn `GaussianMixture(n_components, covariance_type, reg_covar, n_init,
random_state=seed)` fitted on the standardised normal rows; score = -log p(x) =
`-GaussianMixture.score_samples` (negative log-likelihood in standardised units, as PyOD `GMM`).

State (any covariance type is stored in the full form): means (K, D), the Cholesky factors of the
precisions P_k (K, D, D) (upper-triangular, Sigma_k^-1 = P_k P_k^T), log weights (K,) and
log det P_k (K,). Per component

    log N(x | mu_k, Sigma_k) = -0.5 (D log 2 pi + ||x P_k - mu_k P_k||^2) + log det P_k

which is the whitened (Cholesky) form: no covariance inverse and no ||x||^2 expansion, so it is
float32-stable. The exported graph is MatMul (D -> K*D), Sub, Mul, MatMul with a block indicator
(K*D -> K; sums each component's squares without a 3-D reshape, which OpenVINO 2026.4's CPU plugin
miscompiled here) and a max-shifted log-sum-exp over components.
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
from edgead.models._classical import (
    ClassicalDetector,
    StandardizedGraph,
    as_buffer,
    logsumexp_np,
    neg_logsumexp,
)
from edgead.models.base import ExportSpec, register_detector

logger = logging.getLogger(__name__)

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


@dataclass(frozen=True, kw_only=True)
class GMMConfig:
    """GMM settings (passed to scikit-learn GaussianMixture).

    n_components: mixture components K (capped at the number of training rows).
    covariance_type: "full" | "tied" | "diag" | "spherical".
    reg_covar: added to covariance diagonals (standardised units). n_init: EM restarts.
    """

    n_components: int = 4
    covariance_type: str = "full"
    reg_covar: float = 1e-6
    n_init: int = 1
    max_iter: int = 100

    def validate(self) -> None:
        """ConfigError on out-of-range values."""
        if (
            self.n_components < 1
            or self.covariance_type not in COVARIANCE_TYPES
            or self.reg_covar < 0
            or self.n_init < 1
            or self.max_iter < 1
        ):
            raise ConfigError(
                f"GMMConfig: need n_components >= 1, covariance_type in "
                f"{COVARIANCE_TYPES}, reg_covar >= 0, n_init >= 1, max_iter >= 1; "
                f"got {self}"
            )


def full_precision_cholesky(model: Any) -> np.ndarray:
    """(K, D, D) float64 precision Cholesky factors of a fitted GaussianMixture, any type."""
    k, d = model.means_.shape
    pc = np.asarray(model.precisions_cholesky_, dtype=np.float64)
    if model.covariance_type == "full":
        return pc.copy()
    if model.covariance_type == "tied":
        return np.broadcast_to(pc, (k, d, d)).copy()
    if model.covariance_type == "diag":
        return np.stack([np.diag(row) for row in pc])
    return pc[:, None, None] * np.eye(d)[None]


class GMMScorer(nn.Module):
    """Standardised rows (B, D) -> negative log-likelihood (B,) float32. Export-safe."""

    proj: torch.Tensor  # buffer
    mean_proj: torch.Tensor  # buffer
    group: torch.Tensor  # buffer
    offset: torch.Tensor  # buffer

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        super().__init__()
        prec = np.asarray(arrays["prec_chol"], dtype=np.float64)
        k, d, _ = prec.shape
        means = np.asarray(arrays["means"], dtype=np.float64)
        self.k, self.d = k, d
        # x @ P_k for all k at once: (D, K*D); mu_k @ P_k: (K, D)
        self.register_buffer("proj", as_buffer(prec.transpose(1, 0, 2).reshape(d, k * d)))
        self.register_buffer(
            "mean_proj", as_buffer(np.einsum("kd,kde->ke", means, prec).reshape(k * d))
        )
        # sums each component's D squared entries: (K*D, K) block indicator
        self.register_buffer("group", as_buffer(np.kron(np.eye(k), np.ones((d, 1)))))
        self.register_buffer(
            "offset",
            as_buffer(arrays["log_weights"] + arrays["log_det"] - 0.5 * d * math.log(2 * math.pi)),
        )

    def forward(self, scaled: torch.Tensor) -> torch.Tensor:
        """scaled float32 (B, D) -> scores float32 (B,)."""
        y = scaled @ self.proj - self.mean_proj  # (B, K*D), component-major
        log_prob = -0.5 * ((y * y) @ self.group) + self.offset
        return neg_logsumexp(log_prob)


@register_detector("gmm")
class GMM(ClassicalDetector):
    """Gaussian mixture over standardised rows; score = negative log-likelihood."""

    config_cls = GMMConfig

    def _fit_scaled(self, scaled: np.ndarray, seed: int) -> dict[str, np.ndarray]:
        from sklearn.mixture import GaussianMixture

        cfg = self.config
        n_comp = min(cfg.n_components, len(scaled))
        if n_comp < cfg.n_components:
            logger.warning(
                "GMM: only %d training rows; using %d components instead of %d",
                len(scaled),
                n_comp,
                cfg.n_components,
            )
        model = GaussianMixture(
            n_components=n_comp,
            covariance_type=cfg.covariance_type,
            reg_covar=cfg.reg_covar,
            n_init=cfg.n_init,
            max_iter=cfg.max_iter,
            random_state=seed,
        )
        try:
            model.fit(scaled.astype(np.float64))
        except ValueError as exc:  # sklearn: ill-defined empirical covariance
            raise DataError(
                f"GMM fit failed ({exc}); raise reg_covar (now {cfg.reg_covar}) or "
                "lower n_components"
            ) from exc
        if not model.converged_:
            logger.warning(
                "GMM: EM did not converge in %d iterations; raise max_iter", cfg.max_iter
            )
        prec = full_precision_cholesky(model)
        log_det = np.log(np.diagonal(prec, axis1=1, axis2=2)).sum(axis=1)
        return {
            "means": model.means_.astype(np.float64),
            "prec_chol": prec,
            "log_weights": np.log(model.weights_),
            "log_det": log_det,
        }

    def _score_scaled(self, scaled: np.ndarray) -> np.ndarray:
        a = self.model_arrays
        x = scaled.astype(np.float64)
        d = x.shape[1]
        y = (
            np.einsum("nd,kde->nke", x, a["prec_chol"])
            - np.einsum("kd,kde->ke", a["means"], a["prec_chol"])[None]
        )  # type: ignore[index]
        log_prob = (
            -0.5 * (d * math.log(2 * math.pi) + (y * y).sum(axis=2))
            + a["log_det"]
            + a["log_weights"]
        )  # type: ignore[index]
        return -logsumexp_np(log_prob)

    def export_spec(self) -> ExportSpec:
        """Graph: standardise -> whitened component log-likelihoods -> log-sum-exp."""
        self.check_is_fitted()
        scorer = GMMScorer(self.model_arrays)  # type: ignore[arg-type]
        return ExportSpec(
            module=StandardizedGraph(self.standardizer, scorer).eval(),  # type: ignore
            example_input=self._example_input(),
            input_name="rows",
            output_names=("score",),
            postprocess={"kind": "rows"},
        )

    def describe(self) -> dict[str, Any]:
        """Number of components."""
        if not self.is_fitted:
            return {}
        return {"n_components": int(self.model_arrays["means"].shape[0])}  # type: ignore[index]
