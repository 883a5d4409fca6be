"""PatchCore (Roth et al., 2022): a memory bank of normal patch features, nearest-neighbour scores.

Pipeline (sizes from the backbone's `feature_info`, never hard-coded):

1. `PatchCoreEmbedder` (a plain, exportable `nn.Module`): uint8 (B, S, S, 3) RGB -> normalise
   with the backbone's mean/std -> backbone maps at two strides -> 3x3 average pooling (stride 1,
   padding 1: each patch sees its neighbourhood) -> the coarser map resized (bilinear) to the finer
   grid -> channels concatenated -> "embedding" float32 (B, h*w, D).
2. `fit`: embeddings of all training patches, then a greedy k-center coreset
   (`edgead.models.coreset`) keeps `coreset_ratio` of them as the memory bank float32 (M, D).
3. `score`: Euclidean (L2, not squared) distance of every patch to its nearest bank entry
   (faiss "Flat", exact, through `edgead.ops.nn_index`) -> patch map (B, h, w) -> image score
   = max patch distance (or the paper's re-weighted max) -> anomaly map = upsampled, blurred
   patch map: all by `edgead.ops.scoring.score_nn_embeddings`, the scorer of the runtime and of
   the exporter's index measurement.

Export: the embedder is the graph (output "embedding"); the bank ships as `memory_bank` and the
runtime searches it (post-processing kind "nn_index").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgead.errors import ConfigError, DataError, NotFittedError
from edgead.models._image_common import (
    UInt8Normalize,
    backbone_channels_strides,
    build_backbone,
    check_images,
    feature_grid,
    iter_batches,
)
from edgead.models.base import (
    BaseDetector,
    ExportSpec,
    Progress,
    ScoreOutput,
    no_progress,
    register_detector,
)
from edgead.models.coreset import CoresetStats, greedy_coreset
from edgead.ops.nn_index import FaissIndex
from edgead.ops.scoring import parse_postprocess, score_nn_embeddings

logger = logging.getLogger(__name__)

_INDEX_FACTORY = "Flat"


@dataclass(frozen=True, kw_only=True)
class PatchCoreConfig:
    """PatchCore settings.

    backbone: registry name in `edgead.models.backbones`.
    pretrained: load ImageNet weights (False: seeded random weights, for tests only).
    image_size: square input side S in px.
    coreset_ratio: share of the training patches kept in the memory bank, in (0, 1].
    num_neighbors: bank entries around the nearest one used by the re-weighting (>= 2 there).
    reweight: image score = the paper's re-weighted max patch distance instead of the max.
    blur_sigma: Gaussian sigma (px) applied to the upsampled anomaly map.
    projection_dim: random-projection dimension used by the coreset distances (<= 0: none).
    batch_size: images per backbone forward.
    val_fraction: share of the normal training images held out by `edgead.training` to set the
        threshold and score normalisation (0: none; then thresholds need labelled data).
    """

    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    image_size: int = 256
    coreset_ratio: float = 0.1
    num_neighbors: int = 1
    reweight: bool = False
    blur_sigma: float = 4.0
    projection_dim: int = 128
    batch_size: int = 8
    val_fraction: float = 0.1

    def validate(self) -> None:
        """Raise ConfigError on values that cannot work."""
        if self.image_size < 16:
            raise ConfigError(f"patchcore: image_size must be >= 16 px, got {self.image_size}")
        if not 0.0 < self.coreset_ratio <= 1.0:
            raise ConfigError(
                f"patchcore: coreset_ratio must be in (0, 1], got {self.coreset_ratio}"
            )
        if self.num_neighbors < 1:
            raise ConfigError(f"patchcore: num_neighbors must be >= 1, got {self.num_neighbors}")
        if self.reweight and self.num_neighbors < 2:
            raise ConfigError(
                "patchcore: reweight needs num_neighbors >= 2 (the paper uses 9); "
                "with 1 neighbour every weight is 0"
            )
        if self.batch_size < 1 or self.blur_sigma < 0:
            raise ConfigError("patchcore: batch_size must be >= 1 and blur_sigma >= 0")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"patchcore: val_fraction must be in [0, 1), got {self.val_fraction}")


class PatchCoreEmbedder(nn.Module):
    """uint8 (B, S, S, 3) RGB -> "embedding" float32 (B, h*w, D) locally aware patch features.

    Export-safe (ONNX opset 17, OpenVINO, TensorRT): Transpose, Cast, Mul/Add, the backbone's
    convolutions, AveragePool, Resize (bilinear, half-pixel), Concat, Reshape.

    Args:
        backbone: a frozen feature extractor returning maps at the strides of its feature_info.
        image_size: S px; fixes the patch grid (h, w) = ceil(S / finest stride).
    """

    def __init__(self, backbone: nn.Module, image_size: int) -> None:
        super().__init__()
        channels, strides = backbone_channels_strides(backbone)
        self.normalize = UInt8Normalize(backbone.mean, backbone.std)
        self.backbone = backbone
        self.pool = nn.AvgPool2d(kernel_size=3, stride=1, padding=1)
        self.grid_hw = feature_grid(image_size, min(strides))
        self.embedding_dim = int(sum(channels))
        self._resize = tuple(stride != min(strides) for stride in strides)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor]:
        """("embedding" float32 (B, h*w, D),) from uint8 (B, S, S, 3) RGB."""
        maps = self.backbone(self.normalize(images))
        pooled = []
        for feature_map, resize in zip(maps, self._resize, strict=True):
            feature_map = self.pool(feature_map)
            if resize:
                feature_map = F.interpolate(
                    feature_map, size=self.grid_hw, mode="bilinear", align_corners=False
                )
            pooled.append(feature_map)
        embedding = torch.cat(pooled, dim=1)  # (B, D, h, w)
        batch = embedding.shape[0]
        return (embedding.reshape(batch, self.embedding_dim, -1).permute(0, 2, 1).contiguous(),)


@register_detector("patchcore")
class PatchCore(BaseDetector):
    """PatchCore image detector (see module docstring).

    Fitted attributes: `memory_bank_` float32 (M, D); `fit_timings_` seconds of feature
    extraction and coreset selection; `n_train_patches_`.
    """

    modality = "image"
    config_cls = PatchCoreConfig

    def __init__(self, config: PatchCoreConfig) -> None:
        super().__init__(config)
        backbone = build_backbone(config.backbone, config.pretrained)
        self.embedder = PatchCoreEmbedder(backbone, config.image_size).eval()
        self.memory_bank_: np.ndarray | None = None
        self.fit_timings_: dict[str, float] = {}
        self.n_train_patches_ = 0
        self._index: FaissIndex | None = None

    @property
    def is_fitted(self) -> bool:
        return self.memory_bank_ is not None

    @property
    def grid_hw(self) -> tuple[int, int]:
        """(h, w) of the patch grid."""
        return self.embedder.grid_hw

    def _bank(self) -> np.ndarray:
        if self.memory_bank_ is None:
            raise NotFittedError("patchcore is not fitted; call fit() or load a run first")
        return self.memory_bank_

    def _nn_index(self) -> FaissIndex:
        if self._index is None:
            self._index = FaissIndex.build(self._bank(), _INDEX_FACTORY)
        return self._index

    def embed(
        self,
        images: Sequence[np.ndarray] | np.ndarray,
        progress: Progress = no_progress,
        description: str = "patchcore: features",
    ) -> np.ndarray:
        """float32 (N, h*w, D) patch embeddings of uint8 (S, S, 3) RGB images."""
        check_images(images, self.config.image_size)
        parts: list[np.ndarray] = []
        with torch.inference_mode():
            for batch in iter_batches(images, self.config.batch_size, progress, description):
                parts.append(self.embedder(batch)[0].numpy())
        return np.concatenate(parts)

    def fit(
        self,
        data: Sequence[np.ndarray] | np.ndarray,
        *,
        seed: int = 0,
        progress: Progress = no_progress,
    ) -> None:
        """Build the memory bank from normal uint8 (S, S, 3) RGB images."""
        t0 = time.perf_counter()
        embeddings = self.embed(data, progress)
        features = embeddings.reshape(-1, embeddings.shape[-1])
        del embeddings
        t1 = time.perf_counter()
        stats = CoresetStats()
        keep = greedy_coreset(
            features,
            self.config.coreset_ratio,
            projection_dim=self.config.projection_dim,
            seed=seed,
            progress=progress,
            stats=stats,
        )
        self.memory_bank_ = np.ascontiguousarray(features[keep], dtype=np.float32)
        self._index = None
        self.n_train_patches_ = int(features.shape[0])
        t2 = time.perf_counter()
        self.fit_timings_ = {"feature_extraction_s": t1 - t0, "coreset_s": t2 - t1}
        logger.info(
            "patchcore: %d of %d patches in the memory bank (D=%d); features %.1f s, "
            "coreset %.1f s",
            len(keep),
            features.shape[0],
            features.shape[1],
            t1 - t0,
            t2 - t1,
        )

    def patch_distances(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(float32 (B, h, w) L2 distances, int64 (B, h*w) bank ids) of (B, h*w, D) embeddings."""
        batch, n_patches, dim = embeddings.shape
        dists, ids = self._nn_index().search(embeddings.reshape(-1, dim), 1)
        return dists[:, 0].reshape(batch, *self.grid_hw), ids[:, 0].reshape(batch, n_patches)

    def score(
        self, data: Sequence[np.ndarray] | np.ndarray, progress: Progress = no_progress
    ) -> ScoreOutput:
        """Scores float32 (N,) and maps float32 (N, S, S), from the one "nn_index" scorer the
        exporter and the runtime use (`edgead.ops.scoring.score_nn_embeddings`)."""
        cfg = self.config
        bank = self._bank()
        check_images(data, cfg.image_size)
        post = parse_postprocess(self._postprocess())
        size_hw = (cfg.image_size, cfg.image_size)
        scores: list[np.ndarray] = []
        maps: list[np.ndarray] = []
        with torch.inference_mode():
            for batch in iter_batches(data, cfg.batch_size, progress, "patchcore: score"):
                emb = self.embedder(batch)[0].numpy()
                scored = score_nn_embeddings(emb, self._nn_index(), post, size_hw, bank)
                scores.append(scored.raw)
                maps.append(scored.maps)  # type: ignore[arg-type]
        return ScoreOutput(
            scores=np.concatenate(scores).astype(np.float32), anomaly_maps=np.concatenate(maps)
        )

    def _postprocess(self) -> dict[str, Any]:
        """The "nn_index" post-processing entry this model exports (and scores with)."""
        return {
            "kind": "nn_index",
            "grid": list(self.grid_hw),
            "k": 1,
            "blur_sigma": float(self.config.blur_sigma),
            "score": "reweight" if self.config.reweight else "max",
            "num_neighbors": int(self.config.num_neighbors),
        }

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {"memory_bank": self._bank().copy()}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        if "memory_bank" not in arrays:
            raise DataError("patchcore state lacks 'memory_bank'; the run is incomplete")
        bank = np.asarray(arrays["memory_bank"])
        dim = self.embedder.embedding_dim
        if bank.ndim != 2 or bank.shape[1] != dim or bank.shape[0] == 0:
            raise DataError(
                f"patchcore memory bank has shape {bank.shape}; expected (M, {dim}) "
                f"for backbone {self.config.backbone}; the run was made with another "
                "backbone"
            )
        self.memory_bank_ = np.ascontiguousarray(bank, dtype=np.float32)
        self._index = None

    def export_spec(self) -> ExportSpec:
        bank = self._bank()
        size = self.config.image_size
        if self.config.reweight:
            logger.warning(
                "patchcore: the exported bundle scores with 'reweight'; runtimes that "
                "only know 'max' will refuse it"
            )
        return ExportSpec(
            module=self.embedder,
            example_input=np.zeros((1, size, size, 3), dtype=np.uint8),
            input_name="images",
            output_names=("embedding",),
            postprocess=self._postprocess(),
            arrays={"memory_bank": bank.copy()},
        )

    def describe(self) -> dict[str, Any]:
        if not self.is_fitted:
            return {}
        bank = self._bank()
        return {
            "grid": list(self.grid_hw),
            "embedding_dim": int(bank.shape[1]),
            "memory_bank_size": int(bank.shape[0]),
            "n_train_patches": int(self.n_train_patches_),
            "memory_bank_mb": round(bank.nbytes / 1e6, 2),
        }
