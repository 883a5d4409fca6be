"""Tiny detectors for the export/runtime tests: a patch embedder with a memory bank (nn_index)
and a rows scorer (rows). Small torch modules, synthetic data, registered once per process."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgead.models import base
from edgead.models.base import (
    BaseDetector,
    ExportSpec,
    ImagePreprocess,
    ScoreOutput,
    no_progress,
)
from edgead.ops.postprocess import upsample_and_blur
from tests.helpers.tiny_models import gradient_images

SIZE_PX = 32
GRID = 4
DIM = 8
#: the statistics TinyEmbedder normalises with, declared by TinyPatch.input_preprocess
TINY_PATCH_MEAN = (0.485, 0.456, 0.406)
TINY_PATCH_STD = (0.229, 0.224, 0.225)


class _Normalize(nn.Module):
    """uint8 (B, S, S, 3) -> float32 (B, 3, S, S), `(x / 255 - mean) / std`."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std_t))
        self.register_buffer("shift", -mean_t / std_t)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.to(torch.float32).permute(0, 3, 1, 2) * self.scale + self.shift


class TinyEmbedder(nn.Module):
    """uint8 (B, 32, 32, 3) -> ("embedding",) float32 (B, 16, 8): one strided conv + tanh."""

    def __init__(self) -> None:
        super().__init__()
        self.normalize = _Normalize(TINY_PATCH_MEAN, TINY_PATCH_STD)
        self.conv = nn.Conv2d(3, DIM, kernel_size=SIZE_PX // GRID, stride=SIZE_PX // GRID)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor]:
        feats = torch.tanh(self.conv(self.normalize(images)))
        return (feats.flatten(2).transpose(1, 2).contiguous(),)


@dataclass(frozen=True, kw_only=True)
class TinyPatchConfig:
    image_size: int = SIZE_PX
    blur_sigma: float = 1.0


class TinyPatch(BaseDetector):
    """PatchCore in miniature: memory bank = every training patch; score = max NN distance."""

    modality = "image"
    config_cls = TinyPatchConfig

    def __init__(self, config: TinyPatchConfig) -> None:
        super().__init__(config)
        torch.manual_seed(0)
        self.embedder = TinyEmbedder().eval()
        self.bank_: np.ndarray | None = None

    @property
    def is_fitted(self) -> bool:
        return self.bank_ is not None

    def _embed(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        with torch.no_grad():
            return self.embedder(torch.from_numpy(np.stack(images)))[0]

    def fit(self, data: Any, *, seed: int = 0, progress: Any = no_progress) -> None:
        self.bank_ = self._embed(data).reshape(-1, DIM).numpy().astype(np.float32)

    def score(self, data: Any, progress: Any = no_progress) -> ScoreOutput:
        self.check_is_fitted()
        emb = self._embed(data).double()
        bank = torch.from_numpy(self.bank_).double()
        patch = torch.cdist(emb, bank[None]).amin(dim=2).float().numpy()  # L2, (N, 16)
        grid = patch.reshape(len(data), GRID, GRID)
        maps = upsample_and_blur(grid, (SIZE_PX, SIZE_PX), self.config.blur_sigma)
        return ScoreOutput(scores=grid.reshape(len(data), -1).max(axis=1), anomaly_maps=maps)

    def state_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"embedder.{k}": v.numpy() for k, v in self.embedder.state_dict().items()}
        return {**arrays, "bank": self.bank_}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        state = {
            k[len("embedder.") :]: torch.from_numpy(v)
            for k, v in arrays.items()
            if k.startswith("embedder.")
        }
        self.embedder.load_state_dict(state)
        self.bank_ = arrays["bank"]

    def input_preprocess(self) -> ImagePreprocess:
        return ImagePreprocess(mean=TINY_PATCH_MEAN, std=TINY_PATCH_STD)

    def export_spec(self) -> ExportSpec:
        return ExportSpec(
            module=self.embedder,
            example_input=np.zeros((1, SIZE_PX, SIZE_PX, 3), np.uint8),
            input_name="images",
            output_names=("embedding",),
            postprocess={
                "kind": "nn_index",
                "grid": [GRID, GRID],
                "k": 1,
                "blur_sigma": self.config.blur_sigma,
                "score": "max",
            },
            arrays={"memory_bank": self.bank_},
        )


class RowsGraph(nn.Module):
    """float32 (B, D) -> ("score",) (B,): Euclidean norm of the standardised row."""

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(mean))
        self.register_buffer("std", torch.from_numpy(std))

    def forward(self, rows: torch.Tensor) -> tuple[torch.Tensor]:
        z = (rows - self.mean) / self.std
        return (torch.sqrt((z * z).sum(dim=1)),)


@dataclass(frozen=True, kw_only=True)
class TinyRowsConfig:
    eps: float = 1e-6


class TinyRows(BaseDetector):
    """Distance from the training mean in standard deviations."""

    modality = "tabular"
    config_cls = TinyRowsConfig

    def __init__(self, config: TinyRowsConfig) -> None:
        super().__init__(config)
        self.mean_: np.ndarray | None = None
        self.std_: np.ndarray | None = None

    @property
    def is_fitted(self) -> bool:
        return self.mean_ is not None

    def fit(self, data: Any, *, seed: int = 0, progress: Any = no_progress) -> None:
        self.mean_ = data.mean(axis=0).astype(np.float32)
        self.std_ = (data.std(axis=0) + self.config.eps).astype(np.float32)

    def score(self, data: Any, progress: Any = no_progress) -> ScoreOutput:
        z = (np.asarray(data, np.float64) - self.mean_) / self.std_
        return ScoreOutput(scores=np.sqrt((z * z).sum(axis=1)).astype(np.float32))

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean_, "std": self.std_}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.mean_, self.std_ = arrays["mean"], arrays["std"]

    def export_spec(self) -> ExportSpec:
        return ExportSpec(
            module=RowsGraph(self.mean_, self.std_).eval(),
            example_input=np.zeros((2, len(self.mean_)), np.float32),
            input_name="rows",
            output_names=("score",),
            postprocess={"kind": "rows"},
        )


for _name, _cls in (("_tiny_patch", TinyPatch), ("_tiny_rows", TinyRows)):
    if _name not in base._REGISTRY:  # noqa: SLF001 - test-only registration, once per process
        base.register_detector(_name)(_cls)


def synthetic_images(n: int, seed: int, anomalous: bool = False) -> list[np.ndarray]:
    """uint8 (32, 32, 3) RGB images from the one test-image generator
    (`tests.helpers.tiny_models.gradient_images`); anomalies get a bright square."""
    return list(gradient_images(n, seed, SIZE_PX, anomalous))


def run_meta(scores: np.ndarray) -> dict[str, Any]:
    """Threshold + normalisation like a run.json, from validation scores."""
    thr = float(np.percentile(scores, 99))
    return {
        "threshold": {"value": thr, "policy": "percentile:99"},
        "normalisation": {
            "method": "minmax_threshold",
            "min": float(scores.min()),
            "max": float(scores.max()),
            "threshold": thr,
        },
    }


_CACHE_DIR: list[Path] = []


def _cache_dir() -> Path:
    if not _CACHE_DIR:
        import atexit
        import shutil
        import tempfile

        path = Path(tempfile.mkdtemp(prefix="edgead-tiny-bundles-"))
        atexit.register(shutil.rmtree, path, True)
        _CACHE_DIR.append(path)
    return _CACHE_DIR[0]


@functools.cache
def fitted_tiny() -> tuple[TinyPatch, dict[str, Any]]:
    """A TinyPatch fitted on 8 synthetic images and its run-like meta (shared by test modules)."""
    det = TinyPatch(TinyPatchConfig())
    det.fit(synthetic_images(8, seed=0))
    return det, run_meta(det.score(synthetic_images(6, seed=1)).scores)


def tiny_export_data() -> Any:
    """`ExportData` for TinyPatch: 6 normal + 6 anomalous labelled test images and 6 held-out
    normal validation images (other seeds than the training images)."""
    from edgead.export.exporter import ExportData

    test = synthetic_images(6, seed=5) + synthetic_images(6, seed=6, anomalous=True)
    return ExportData(
        test_inputs=test,
        test_labels=np.r_[np.zeros(6), np.ones(6)].astype(np.int64),
        normal_val=np.stack(synthetic_images(6, seed=1)),
    )


def parity_images() -> np.ndarray:
    """uint8 (6, 32, 32, 3): 3 normal, 3 with a bright square."""
    return np.stack(synthetic_images(3, seed=2) + synthetic_images(3, seed=3, anomalous=True))


@functools.cache
def tiny_bundle(target: str, precision: str = "fp32") -> Path:
    """Path of a TinyPatch bundle exported once per test process."""
    from edgead.export import export_detector

    det, meta = fitted_tiny()
    out = _cache_dir() / f"tiny_{target}_{precision}.edgead"
    # exact index: these bundles are the reference the runtime tests compare with torch
    export_detector(
        det,
        meta,
        target,
        precision,
        out,
        parity_inputs=parity_images()[:4],
        index={"index": "flat"},
    )
    return out
