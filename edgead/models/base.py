"""Detector contract and registry. Every detector family registers itself here.

Conventions (see docs/ARCHITECTURE.md):
- Scores: higher = more anomalous. `score()` returns raw scores; thresholds live outside.
- Image detectors take `images`: a Sequence of uint8 RGB arrays (S, S, 3) already resized to
  `config.image_size` with `edgead.ops.image.resize_frame` (the same code the runtime
  uses), and return anomaly maps (N, S, S) float32 at that size.
- Tabular detectors take `rows`: float32 (N, D) raw feature values (standardisation is theirs).
- State is plain arrays (`state_arrays` / `load_state_arrays`) plus the JSON config: no pickles.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np

from edgead.errors import ConfigError, NotFittedError, unknown_name_error
from edgead.ops.preprocess_spec import ImagePreprocess
from edgead.ops.progress import Progress, no_progress  # noqa: F401 - the models' API


@dataclass
class ScoreOutput:
    """Raw scores and, for image detectors, anomaly maps.

    scores: float32 (N,), higher = more anomalous, in the detector's raw units.
    anomaly_maps: float32 (N, S, S) at the detector's input size, or None (tabular).
    """

    scores: np.ndarray
    anomaly_maps: np.ndarray | None = None


@dataclass
class ExportSpec:
    """What the exporter needs from a fitted detector.

    module: a torch.nn.Module; forward(input) -> tuple of tensors named `output_names`.
        Images: input uint8 (B, S, S, 3) RGB NHWC; the module normalises it.
        Tabular: input float32 (B, D) raw rows; the module standardises them.
    example_input: np.ndarray used to trace (batch 1 or a few rows).
    output_names: e.g. ("embedding",) for nn-index scoring, ("score", "anomaly_map") otherwise.
    postprocess: JSON dict for `edgead.ops.postprocess` (kind, blur sigma, k, ...).
    arrays: extra arrays to ship in the bundle (e.g. "memory_bank" (M, D) float32).
    """

    module: Any
    example_input: np.ndarray
    input_name: str
    output_names: tuple[str, ...]
    postprocess: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    dynamic_batch: bool = True


_State = TypeVar("_State")


class BaseDetector(abc.ABC):
    """Base class: a plain object holding config + fitted state; torch modules live inside."""

    name: ClassVar[str]
    modality: ClassVar[str]  # "image" | "tabular"
    config_cls: ClassVar[type]

    def __init__(self, config: Any) -> None:
        self.config = config

    @property
    @abc.abstractmethod
    def is_fitted(self) -> bool:
        """True once `fit` ran or state was loaded."""

    def check_is_fitted(self) -> None:
        """Raise NotFittedError unless fitted."""
        if not self.is_fitted:
            raise NotFittedError(f"{self.name} is not fitted; call fit() or load a run first")

    def _require_fitted(self, state: _State | None) -> _State:
        """`state` (a fitted part: graph, network), or NotFittedError when it is still None."""
        if state is None:
            raise NotFittedError(f"{self.name} is not fitted; call fit() or load a run first")
        return state

    @abc.abstractmethod
    def fit(
        self,
        data: Sequence[np.ndarray] | np.ndarray,
        *,
        seed: int = 0,
        progress: Progress = no_progress,
    ) -> None:
        """Fit on normal data only."""

    @abc.abstractmethod
    def score(
        self, data: Sequence[np.ndarray] | np.ndarray, progress: Progress = no_progress
    ) -> ScoreOutput:
        """Raw scores (and maps for images) for `data`."""

    @abc.abstractmethod
    def state_arrays(self) -> dict[str, np.ndarray]:
        """Fitted state as named numpy arrays (saved to state.npz, no pickle)."""

    @abc.abstractmethod
    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore fitted state written by `state_arrays`."""

    @abc.abstractmethod
    def export_spec(self) -> ExportSpec:
        """The graph module and runtime post-processing for export."""

    def input_preprocess(self) -> ImagePreprocess | None:
        """The preprocessing the exported image graph performs; None for rows and windows.

        Image detectors built on a registered backbone inherit the statistics the backbone
        declares at registration (`edgead.models.backbones.backbone_preprocess`); detectors
        without a backbone override this method.

        Raises:
            ConfigError: an image detector that declares nothing (no backbone, no override).
        """
        if self.modality != "image":
            return None
        backbone = getattr(self.config, "backbone", None)
        if backbone is None:
            raise ConfigError(
                f"{self.name}: an image detector must declare its preprocessing; override "
                "input_preprocess() or build on a registered backbone"
            )
        from edgead.models.backbones import backbone_preprocess

        return backbone_preprocess(str(backbone))

    def describe(self) -> dict[str, Any]:
        """Extra JSON facts for the run's metadata (e.g. memory-bank size); override to add."""
        return {}


_REGISTRY: dict[str, type[BaseDetector]] = {}


def register_detector(name: str) -> Callable[[type[BaseDetector]], type[BaseDetector]]:
    """Class decorator adding a detector to the registry under `name` (raises on duplicates)."""

    def wrap(cls: type[BaseDetector]) -> type[BaseDetector]:
        if name in _REGISTRY:
            raise ConfigError(f"detector '{name}' is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def canonical_name(name: str) -> str:
    """CLI spelling to registry name: 'deep-svdd' -> 'deep_svdd'."""
    return name.strip().lower().replace("-", "_")


def list_detectors(modality: str | None = None) -> list[str]:
    """Registered names, optionally only one modality."""
    return sorted(n for n, c in _REGISTRY.items() if modality in (None, c.modality))


def get_detector_class(name: str) -> type[BaseDetector]:
    """The class registered as `name`; ConfigError with a hint when unknown."""
    key = canonical_name(name)
    if key not in _REGISTRY:
        raise unknown_name_error("detector", name, _REGISTRY)
    return _REGISTRY[key]


def create_detector(name: str, cfg: dict[str, Any] | None = None) -> BaseDetector:
    """Build detector `name` from a config dict (unknown keys rejected)."""
    from edgead.config import from_dict

    cls = get_detector_class(name)
    return cls(from_dict(cls.config_cls, cfg or {}))
