"""PaDiM (Defard et al., 2020): a Gaussian per feature-grid position, Mahalanobis anomaly map.

Backbone maps (all stages from `feature_info`) are resized to the finest grid and concatenated;
a seeded random subset of `n_features` channels is kept (as in the paper). For each position p
of the (h, w) grid we fit mean mu_p and covariance Sigma_p + eps * I on the training images and
keep the precision P_p = (Sigma_p + eps * I)^-1. The anomaly map is the Mahalanobis distance
sqrt((x_p - mu_p)^T P_p (x_p - mu_p)) per position, in feature units (not squared).

`pooling="global"` fits one Gaussian to the patches of all positions instead. Per-position
statistics assume the part sits at the same place in every frame (fixtured parts, aligned
cells); when parts move or turn between frames (MPDD's metal plates), the shared Gaussian is the
one that works: MPDD 224 px image AUROC 0.71 per position vs 0.999 global, ELPV 128 px 0.85 vs
0.75 (all 152 channels, `benchmarks/image_methods.py`).

Export: the means and precisions are graph constants, so the whole score runs on the device
(h * w * d * d float32 values: 32 * 32 * 100 * 100 * 4 B = 41 MB at 256 px, stride 8, d = 100;
d * d values, 92 KB for d = 152, with global pooling).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgead.errors import ConfigError, DataError
from edgead.models._image_common import (
    BackboneFeatures,
    backbone_channels_strides,
    build_backbone,
    check_images,
    iter_batches,
    map_export_spec,
    maps_to_output,
)
from edgead.models.base import (
    BaseDetector,
    ExportSpec,
    Progress,
    ScoreOutput,
    no_progress,
    register_detector,
)

logger = logging.getLogger(__name__)

POOLINGS = ("position", "global")


@dataclass(frozen=True, kw_only=True)
class PaDiMConfig:
    """PaDiM settings.

    image_size: square input side in px.
    backbone: registry name in `edgead.models.backbones`.
    pretrained: load ImageNet weights (False only for tests).
    n_features: channels kept from the concatenated stages (random, seeded); capped at the total;
        0 = all channels.
    pooling: "position" (one Gaussian per grid position, the paper) or "global" (one Gaussian
        for the patches of every position: for parts that are not aligned between frames).
    eps: ridge added to each covariance diagonal (feature units squared).
    blur_sigma: Gaussian sigma (px) applied to the upsampled map.
    batch_size: images per backbone forward.
    """

    image_size: int = 256
    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    n_features: int = 100
    pooling: str = "position"
    eps: float = 0.01
    blur_sigma: float = 4.0
    batch_size: int = 8

    def validate(self) -> None:
        """Raise ConfigError on values that cannot work."""
        if self.image_size < 16:
            raise ConfigError(f"padim: image_size must be >= 16 px, got {self.image_size}")
        if self.n_features < 0:
            raise ConfigError(
                f"padim: n_features must be >= 0 (0 = all channels), got {self.n_features}"
            )
        if self.pooling not in POOLINGS:
            raise ConfigError(
                f"padim: pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}"
            )
        if self.eps <= 0:
            raise ConfigError(
                f"padim: eps must be > 0 (it keeps covariances invertible), got {self.eps}"
            )
        if self.batch_size < 1 or self.blur_sigma < 0:
            raise ConfigError("padim: batch_size must be >= 1 and blur_sigma >= 0")


class PaDiMEmbedding(nn.Module):
    """uint8 (B, S, S, 3) RGB -> float32 (B, d, h, w) embeddings (chosen channels, finest grid)."""

    channel_index: torch.Tensor  # buffer

    def __init__(
        self,
        features: BackboneFeatures,
        channel_index: torch.Tensor,
        grid_hw: tuple[int, int],
        resize: Sequence[bool],
    ) -> None:
        super().__init__()
        self.features = features
        self.register_buffer("channel_index", channel_index.to(torch.int64))
        self.grid_hw = (int(grid_hw[0]), int(grid_hw[1]))
        self.resize = tuple(bool(r) for r in resize)  # per stage: coarser than the grid

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """float32 (B, d, h, w)."""
        maps = self.features(images)
        resized = [
            F.interpolate(m, size=self.grid_hw, mode="bilinear", align_corners=False)
            if resize
            else m
            for m, resize in zip(maps, self.resize, strict=True)
        ]
        return torch.index_select(torch.cat(resized, dim=1), 1, self.channel_index)


class PaDiMGraph(nn.Module):
    """Export module: uint8 (B, S, S, 3) -> ("anomaly_map",) float32 (B, h, w) Mahalanobis."""

    mean: torch.Tensor  # buffer
    precision: torch.Tensor  # buffer

    def __init__(
        self, embedding: PaDiMEmbedding, mean: torch.Tensor, precision: torch.Tensor
    ) -> None:
        super().__init__()
        self.embedding = embedding
        self.register_buffer("mean", mean)  # (P, d); (1, d) when pooled globally
        self.register_buffer("precision", precision)  # (P, d, d); (1, d, d) when pooled

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor]:
        """(float32 (B, h, w) Mahalanobis distances, not squared,)."""
        emb = self.embedding(images)
        batch, dim, height, width = emb.shape
        # (P, B, d): one batched matmul per position, export-safe (MatMul, no einsum).
        diff = emb.reshape(batch, dim, height * width).permute(2, 0, 1) - self.mean.unsqueeze(1)
        left = torch.matmul(diff, self.precision)  # (P, B, d)
        dist2 = (left * diff).sum(dim=2).clamp_min(0.0)  # (P, B)
        return (torch.sqrt(dist2).permute(1, 0).reshape(batch, height, width),)


@register_detector("padim")
class PaDiM(BaseDetector):
    """PaDiM image detector (see module docstring)."""

    modality = "image"
    config_cls = PaDiMConfig

    def __init__(self, config: PaDiMConfig) -> None:
        super().__init__(config)
        backbone = build_backbone(config.backbone, config.pretrained)
        channels, strides = backbone_channels_strides(backbone)
        self.total_channels_ = sum(channels)
        self.grid_hw_ = (-(-config.image_size // min(strides)),) * 2
        self._resize = [r != min(strides) for r in strides]
        self._features = BackboneFeatures(backbone)
        self._graph: PaDiMGraph | None = None

    @property
    def is_fitted(self) -> bool:
        return self._graph is not None

    def _fitted_graph(self) -> PaDiMGraph:
        return self._require_fitted(self._graph)

    def _embedding(self, channel_index: np.ndarray) -> PaDiMEmbedding:
        if (
            channel_index.ndim != 1
            or channel_index.size == 0
            or channel_index.min() < 0
            or channel_index.max() >= self.total_channels_
        ):
            raise DataError(
                f"padim: channel_index must pick from {self.total_channels_} "
                "backbone channels; the run was made with another backbone"
            )
        return PaDiMEmbedding(
            self._features,
            torch.from_numpy(channel_index.astype(np.int64)),
            self.grid_hw_,
            self._resize,
        )

    def fit(
        self,
        data: Sequence[np.ndarray] | np.ndarray,
        *,
        seed: int = 0,
        progress: Progress = no_progress,
    ) -> None:
        """Fit the per-position Gaussians on normal uint8 (S, S, 3) RGB images."""
        cfg = self.config
        n_images = check_images(data, cfg.image_size)
        if n_images < 2:
            raise DataError("padim needs at least 2 training images to estimate covariances")
        n_keep = min(cfg.n_features or self.total_channels_, self.total_channels_)
        if n_keep < cfg.n_features:
            logger.warning(
                "padim: backbone has %d channels; using all of them instead of %d",
                self.total_channels_,
                cfg.n_features,
            )
        rng = np.random.default_rng(seed)
        channel_index = np.sort(rng.choice(self.total_channels_, size=n_keep, replace=False))
        embedding = self._embedding(channel_index)
        # Running sums in float64: sum x and sum x x^T per Gaussian, (G, d) and (G, d, d), with
        # G = P positions, or G = 1 when every patch feeds one Gaussian.
        n_pos = self.grid_hw_[0] * self.grid_hw_[1]
        pooled = cfg.pooling == "global"
        n_gauss = 1 if pooled else n_pos
        sum_x = torch.zeros(n_gauss, n_keep, dtype=torch.float64)
        sum_xx = torch.zeros(n_gauss, n_keep, n_keep, dtype=torch.float64)
        with torch.inference_mode():
            for batch in iter_batches(data, cfg.batch_size, progress, "padim: features"):
                emb = embedding(batch).to(torch.float64)  # (B, d, h, w)
                emb = emb.reshape(emb.shape[0], n_keep, n_pos).permute(2, 0, 1)  # (P, B, d)
                if pooled:
                    emb = emb.reshape(1, -1, n_keep)  # (1, P * B, d)
                sum_x += emb.sum(dim=1)
                sum_xx += torch.matmul(emb.transpose(1, 2), emb)
        n_samples = n_images * n_pos if pooled else n_images
        mean = sum_x / n_samples
        cov = (sum_xx - n_samples * mean.unsqueeze(2) * mean.unsqueeze(1)) / (n_samples - 1)
        cov += cfg.eps * torch.eye(n_keep, dtype=torch.float64)
        precision = torch.linalg.inv(cov)
        precision = 0.5 * (precision + precision.transpose(1, 2))
        self._graph = PaDiMGraph(embedding, mean.to(torch.float32), precision.to(torch.float32))
        logger.info(
            "padim: fitted %d Gaussian(s) x %d dims on %d images (%.2f MB of statistics)",
            mean.shape[0],
            n_keep,
            n_images,
            self.statistics_bytes() / 1e6,
        )

    def statistics_bytes(self) -> int:
        """Bytes of the fitted means and precision matrices (float32)."""
        graph = self._fitted_graph()
        return int(graph.mean.numel() * 4 + graph.precision.numel() * 4)

    def grid_maps(
        self, data: Sequence[np.ndarray] | np.ndarray, progress: Progress = no_progress
    ) -> np.ndarray:
        """float32 (N, h, w) Mahalanobis distances at the feature grid (the graph output)."""
        graph = self._fitted_graph()
        check_images(data, self.config.image_size)
        outputs: list[np.ndarray] = []
        with torch.inference_mode():
            for batch in iter_batches(data, self.config.batch_size, progress, "padim: score"):
                outputs.append(graph(batch)[0].numpy())
        return np.concatenate(outputs).astype(np.float32)

    def score(
        self, data: Sequence[np.ndarray] | np.ndarray, progress: Progress = no_progress
    ) -> ScoreOutput:
        """Scores (N,) = max of the blurred map; maps (N, S, S) Mahalanobis distances."""
        return maps_to_output(
            self.grid_maps(data, progress), self.config.image_size, self.config.blur_sigma
        )

    def state_arrays(self) -> dict[str, np.ndarray]:
        graph = self._fitted_graph()
        return {
            "channel_index": graph.embedding.channel_index.numpy().copy(),
            "mean": graph.mean.numpy().copy(),
            "precision": graph.precision.numpy().copy(),
        }

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        for key in ("channel_index", "mean", "precision"):
            if key not in arrays:
                raise DataError(f"padim state lacks '{key}'; the run is incomplete")
        embedding = self._embedding(np.asarray(arrays["channel_index"]))
        n_pos = 1 if self.config.pooling == "global" else self.grid_hw_[0] * self.grid_hw_[1]
        dim = embedding.channel_index.numel()
        mean = np.asarray(arrays["mean"], dtype=np.float32)
        precision = np.asarray(arrays["precision"], dtype=np.float32)
        if mean.shape != (n_pos, dim) or precision.shape != (n_pos, dim, dim):
            raise DataError(
                f"padim state has mean {mean.shape} / precision {precision.shape}; "
                f"expected ({n_pos}, {dim}) / ({n_pos}, {dim}, {dim}) for this "
                f"image_size, backbone and pooling ({self.config.pooling!r})"
            )
        self._graph = PaDiMGraph(
            embedding, torch.from_numpy(mean.copy()), torch.from_numpy(precision.copy())
        )

    def export_spec(self) -> ExportSpec:
        graph = self._fitted_graph()
        return map_export_spec(graph, self.config.image_size, self.config.blur_sigma)

    def describe(self) -> dict[str, Any]:
        if not self.is_fitted:
            return {}
        graph = self._fitted_graph()
        return {
            "grid": list(self.grid_hw_),
            "n_features": int(graph.mean.shape[1]),
            "pooling": self.config.pooling,
            "statistics_mb": round(self.statistics_bytes() / 1e6, 2),
        }
