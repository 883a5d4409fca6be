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
   = mean of the `top_k` largest patch distances (default 3; 1 = the max; or the paper's
   re-weighted max) -> anomaly map = upsampled, blurred patch map: all by
   `edgead.ops.scoring.score_nn_embeddings`, the scorer of the runtime and of the exporter's
   index measurement.

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
    load_batch,
    map_batches,
)
from edgead.models._ort_features import PARITY_IMAGES, WORKER_BATCH, OrtFeatures
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
#: at most this many training images get a cross-fitted score (a 99th percentile needs ~100s).
MAX_HELDOUT_IMAGES = 256
FEATURE_ENGINES = ("onnxruntime", "torch")
#: images embedded and scored together by `PatchCore.score` (bounds the embeddings held).
SCORE_CHUNK = 32


@dataclass(frozen=True, kw_only=True)
class PatchCoreConfig:
    """PatchCore settings.

    backbone: registry name in `edgead.models.backbones`.
    pretrained: load ImageNet weights (False: seeded random weights, for tests only).
    image_size: square input side S in px.
    coreset_ratio: share of the training patches kept in the memory bank, in (0, 1].
    num_neighbors: bank entries around the nearest one used by the re-weighting (>= 2 there).
    reweight: image score = the paper's re-weighted max patch distance instead of the max.
    top_k: image score = mean of the top_k largest patch distances (1: the max patch distance;
        not used with reweight). Default 3: on the grayscale development set it scored higher
        than the max in every seed (benchmarks/vs_anomalib.md, "What changed").
    blur_sigma: Gaussian sigma (px) applied to the upsampled anomaly map.
    projection_dim: random-projection dimension of the coreset's distances (<= 0, default:
        exact distances in the D-dim feature space; a projection only pays for wide features:
        at D = 152 a 128-d one cost 0.007 ELPV image AUROC, issue 12).
    batch_size: images per torch backbone forward (ONNX Runtime runs `WORKER_BATCH`-image batches
        on several threads).
    val_fraction: share of the normal training images held out of the bank by `edgead.training`
        to set the threshold and score normalisation (0: none, every image goes into the bank).
    threshold_folds: k of the k-fold cross-fitting that gives every training image (at most
        `MAX_HELDOUT_IMAGES` of them) a score from a bank without its own patches, for the
        threshold when val_fraction is 0 (< 2: off; then thresholds need labelled data).
    feature_engine: "onnxruntime" (the embedder exported in memory and run by ONNX Runtime,
        used only after it matched torch on the first batch; else torch, logged) or "torch".
    """

    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    image_size: int = 256
    coreset_ratio: float = 0.01
    num_neighbors: int = 1
    reweight: bool = False
    top_k: int = 3
    blur_sigma: float = 4.0
    projection_dim: int = 0
    batch_size: int = 8
    val_fraction: float = 0.0
    threshold_folds: int = 10
    feature_engine: str = "onnxruntime"

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
        if self.top_k < 1:
            raise ConfigError(f"patchcore: top_k must be >= 1 (1: the max), got {self.top_k}")
        if self.batch_size < 1 or self.blur_sigma < 0:
            raise ConfigError("patchcore: batch_size must be >= 1 and blur_sigma >= 0")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"patchcore: val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.feature_engine not in FEATURE_ENGINES:
            raise ConfigError(
                f"patchcore: feature_engine must be one of {', '.join(FEATURE_ENGINES)}, "
                f"got {self.feature_engine!r}"
            )
        if self.threshold_folds < 0:
            raise ConfigError(
                f"patchcore: threshold_folds must be >= 0 (0 or 1: off), got {self.threshold_folds}"
            )


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
    extraction, coreset selection and cross-fitting; `n_train_patches_`; `heldout_scores_`
    float32 (n,) cross-fitted normal image scores (None when threshold_folds < 2 or
    val_fraction > 0) and `heldout_source_` describing them.
    """

    modality = "image"
    config_cls = PatchCoreConfig

    def __init__(self, config: PatchCoreConfig) -> None:
        super().__init__(config)
        backbone = build_backbone(config.backbone, config.pretrained)
        self.embedder = PatchCoreEmbedder(backbone, config.image_size).eval()
        n_patches = self.embedder.grid_hw[0] * self.embedder.grid_hw[1]
        if config.top_k > n_patches:
            raise ConfigError(
                f"patchcore: top_k {config.top_k} exceeds the {n_patches} patches of the "
                f"{self.embedder.grid_hw[0]} x {self.embedder.grid_hw[1]} grid; lower top_k"
            )
        self.memory_bank_: np.ndarray | None = None
        self.fit_timings_: dict[str, float] = {}
        self.n_train_patches_ = 0
        self.heldout_scores_: np.ndarray | None = None
        self.features_per_s_ = 0.0
        self.feature_engine_ = ""
        self._ort: OrtFeatures | None = None
        self.heldout_source_ = ""
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
        return self._embed(images, progress, description)

    def _embed(
        self, images: Sequence[np.ndarray] | np.ndarray, progress: Progress, description: str
    ) -> np.ndarray:
        """`embed` of checked images: the first `PARITY_IMAGES` images decide the engine (and
        are its parity batch); through ONNX Runtime the rest go in batches of `WORKER_BATCH`
        to `OrtFeatures.workers` threads that each read and run their own batches."""
        n_head = min(len(images), PARITY_IMAGES)
        with torch.inference_mode():
            head = load_batch(images, 0, n_head)
            parts = [self._features(torch.from_numpy(head))]
            progress(n_head, len(images), description)
            if self._ort is not None:
                workers = self._ort.workers
                parts += map_batches(
                    self._ort, images, WORKER_BATCH, workers, progress, description, n_head
                )
            else:
                batch_size = self.config.batch_size
                batches = iter_batches(images, batch_size, progress, description, n_head)
                parts += [self._features(batch) for batch in batches]
        return np.concatenate(parts)

    def _features(self, batch: torch.Tensor) -> np.ndarray:
        """float32 (B, h*w, D) embeddings of a uint8 (B, S, S, 3) batch, through the configured
        engine (ONNX Runtime after its parity check on the first batch, else torch)."""
        if self.config.feature_engine == "onnxruntime" and not self.feature_engine_:
            self._ort = OrtFeatures.build(self.embedder, batch.numpy())
            self.feature_engine_ = "onnxruntime" if self._ort is not None else "torch (fallback)"
        if self._ort is not None:
            return self._ort(batch.numpy())
        self.feature_engine_ = self.feature_engine_ or "torch"
        return self.embedder(batch)[0].numpy()

    def fit(
        self,
        data: Sequence[np.ndarray] | np.ndarray,
        *,
        seed: int = 0,
        progress: Progress = no_progress,
    ) -> None:
        """Build the memory bank from normal uint8 (S, S, 3) RGB images (and, with
        threshold_folds >= 2 and val_fraction 0, their cross-fitted scores)."""
        t0 = time.perf_counter()
        embeddings = self.embed(data, progress)
        n_images, n_patches, dim = embeddings.shape
        features = embeddings.reshape(-1, dim)
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
        self.heldout_scores_, self.heldout_source_ = None, ""
        folds = self.config.threshold_folds
        if folds >= 2 and self.config.val_fraction == 0.0 and n_images >= 2:
            self.heldout_scores_ = self._crossfit_scores(embeddings, keep // n_patches, seed)
            self.heldout_source_ = (
                f"cross-fitted: {min(folds, n_images)} folds, {len(self.heldout_scores_)} "
                "images, each scored against the bank without its fold's entries"
            )
        t3 = time.perf_counter()
        self.fit_timings_ = {
            "feature_extraction_s": t1 - t0,
            "coreset_s": t2 - t1,
            "crossfit_s": t3 - t2,
        }
        self.features_per_s_ = n_images / max(t1 - t0, 1e-9)
        logger.info(
            "patchcore: %d of %d patches in the memory bank (D=%d); features %.1f s "
            "(%.1f images/s), coreset %.1f s, cross-fitting %.1f s",
            len(keep),
            features.shape[0],
            dim,
            t1 - t0,
            n_images / max(t1 - t0, 1e-9),
            t2 - t1,
            t3 - t2,
        )

    def _crossfit_scores(
        self, embeddings: np.ndarray, bank_image_ids: np.ndarray, seed: int
    ) -> np.ndarray:
        """float32 (n,) image scores of up to `MAX_HELDOUT_IMAGES` training images, each against
        the memory bank minus the entries taken from its own fold's images.

        The images are split into `threshold_folds` seeded folds; an image's own patches (and
        its fold's) are never in the bank that scores it, so the scores behave like those of
        unseen normal images, while the final bank keeps every training image. Removing a
        fold's entries leaves its region of feature space a little less covered than a coreset
        built without the fold would, so the scores lean high (a conservative threshold).

        Args:
            embeddings: float32 (N, P, D) training patch embeddings.
            bank_image_ids: int64 (M,) training image of each memory-bank entry.
            seed: seeds the folds and the choice of scored images.
        """
        bank = self._bank()
        n_images = embeddings.shape[0]
        n_folds = min(self.config.threshold_folds, n_images)
        rng = np.random.default_rng(seed + 1)
        fold_of = np.empty(n_images, dtype=np.int64)
        fold_of[rng.permutation(n_images)] = np.arange(n_images) % n_folds
        scored = np.sort(rng.permutation(n_images)[:MAX_HELDOUT_IMAGES])
        scores = np.full(len(scored), np.nan, dtype=np.float32)
        for fold in range(n_folds):
            rows = np.flatnonzero(fold_of[scored] == fold)
            others = fold_of[bank_image_ids] != fold
            if rows.size == 0 or not others.any():
                continue
            fold_bank = np.ascontiguousarray(bank[others])
            index = FaissIndex.build(fold_bank, _INDEX_FACTORY)
            emb = embeddings[scored[rows]]
            scores[rows] = self._image_scores(emb, fold_bank, index)
        missing = int(np.isnan(scores).sum())
        if missing:
            logger.warning(
                "patchcore: %d of %d cross-fitted images had no bank entries outside their "
                "fold (a tiny bank); their scores are left out of the threshold",
                missing,
                len(scores),
            )
        return scores[~np.isnan(scores)]

    def _image_scores(self, emb: np.ndarray, bank: np.ndarray, index: FaissIndex) -> np.ndarray:
        """float32 (B,) image scores of (B, P, D) embeddings against `bank`, by the one
        "nn_index" scorer (`edgead.ops.scoring`), without maps."""
        size_hw = (self.config.image_size, self.config.image_size)
        post = parse_postprocess(self._postprocess())
        return score_nn_embeddings(emb, index, post, size_hw, bank, want_maps=False).raw

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
        n_images = len(data)
        for start in range(0, n_images, SCORE_CHUNK):
            emb = self._embed(data[start : start + SCORE_CHUNK], no_progress, "")
            scored = score_nn_embeddings(emb, self._nn_index(), post, size_hw, bank)
            scores.append(scored.raw)
            maps.append(scored.maps)  # type: ignore[arg-type]
            progress(min(start + SCORE_CHUNK, n_images), n_images, "patchcore: score")
        return ScoreOutput(
            scores=np.concatenate(scores).astype(np.float32), anomaly_maps=np.concatenate(maps)
        )

    def _postprocess(self) -> dict[str, Any]:
        """The "nn_index" post-processing entry this model exports (and scores with)."""
        post: dict[str, Any] = {
            "kind": "nn_index",
            "grid": list(self.grid_hw),
            "k": 1,
            "blur_sigma": float(self.config.blur_sigma),
            "score": self._image_score_kind(),
            "num_neighbors": int(self.config.num_neighbors),
        }
        if post["score"] == "top_mean":
            post["top_k"] = int(self.config.top_k)
        return post

    def _image_score_kind(self) -> str:
        """The "nn_index" image score this config asks for."""
        if self.config.reweight:
            return "reweight"
        return "top_mean" if self.config.top_k > 1 else "max"

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
            "features_per_s": round(self.features_per_s_, 2),
            "feature_engine": self.feature_engine_,
            "threshold_scores": self.heldout_source_ or "held-out images",
        }
