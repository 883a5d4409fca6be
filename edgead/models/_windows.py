"""Shared pieces of the time-series window detectors (window_ae, window_vae, conv_ae_1d, mae_1d).

A window detector is fitted on sensor rows in time order and scores sliding windows of
`window` rows (`edgead.ops.windows`: a window's score belongs to its last row, nothing looks
ahead). Standardisation (per feature, fitted on the training rows) is part of the state and of
the exported graph, which takes raw windows float32 (B, L, D) and returns ("score",) (B,).

- `window_score`: a window's score from its per-row, per-feature errors (mean / max_feature).
- `WindowsGraph`: the export module (raw windows -> standardise -> scorer).
- `WindowNetDetector`: fit / score / state / export; a subclass builds its network with
  `_build_network(length, n_features)` returning a module with `forward(x (B, L, D)) -> (B,)`
  (export-safe) and `loss(x (B, L, D)) -> (B,)`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from edgead.errors import ConfigError, DataError
from edgead.models._tabular import (
    Standardizer,
    load_standardized_net,
    standardized_net_state,
    train_network,
)
from edgead.models.base import BaseDetector, ExportSpec, Progress, ScoreOutput, no_progress
from edgead.ops.rows import check_rows
from edgead.ops.windows import check_window, sliding_windows

POSTPROCESS_KIND = "window"
#: window scores from per-row, per-feature errors: the mean, or the worst feature's mean.
WINDOW_SCORES = ("mean", "max_feature")


def window_score(errors: torch.Tensor, max_feature: bool) -> torch.Tensor:
    """float32 (B,) window scores from squared errors (B, T, D) (T rows or time steps).

    max_feature=False: the mean over T and D; True: the largest per-feature mean over T (one
    sensor going wrong is not diluted by the ones that are fine). Export-safe.
    """
    if max_feature:
        return errors.mean(dim=1).amax(dim=1)
    return errors.mean(dim=(1, 2))


def validate_window_config(cfg: Any) -> None:
    """ConfigError unless the shared fields of a window config are in range."""
    check_window(cfg.window, cfg.stride)
    checks = {
        "epochs": cfg.epochs >= 1,
        "batch_size": cfg.batch_size >= 1,
        "lr": cfg.lr > 0,
        "weight_decay": cfg.weight_decay >= 0,
        "val_fraction": 0 <= cfg.val_fraction < 1,
        "patience": cfg.patience >= 0,
        "dropout": 0 <= getattr(cfg, "dropout", 0.0) < 1,
    }
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        values = ", ".join(f"{k}={getattr(cfg, k)!r}" for k in bad)
        raise ConfigError(
            f"{type(cfg).__name__}: out of range: {values}; need epochs, batch_size >= 1, "
            "lr > 0, weight_decay >= 0, 0 <= val_fraction < 1, patience >= 0, 0 <= dropout < 1"
        )


class WindowsGraph(nn.Module):
    """Export wrapper: raw windows (B, L, D) -> standardise per feature -> scorer -> ("score",)."""

    def __init__(self, standardizer: Standardizer, scorer: nn.Module) -> None:
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(standardizer.mean.copy()))
        self.register_buffer("scale", torch.from_numpy(standardizer.scale.copy()))
        self.scorer = scorer

    def forward(self, windows: torch.Tensor) -> tuple[torch.Tensor]:
        """1-tuple holding float32 scores (B,) of raw windows float32 (B, L, D)."""
        return (self.scorer((windows - self.mean) / self.scale),)


def _segments(data: Any) -> list[np.ndarray]:
    """The training recordings as a list of float32 (N_i, D) arrays (one array = one)."""
    if isinstance(data, np.ndarray):
        return [check_rows(data)]
    if isinstance(data, Sequence) and data and all(np.ndim(d) == 2 for d in data):
        segments = [check_rows(d) for d in data]
        if len({s.shape[1] for s in segments}) != 1:
            raise DataError("all training recordings must have the same feature columns")
        return segments
    raise DataError(
        "window detectors fit on float32 (N, D) rows in time order, or a list of such arrays "
        "(separate normal recordings)"
    )


class WindowNetDetector(BaseDetector):
    """fit / score / state / export for a torch network over standardised windows."""

    modality: ClassVar[str] = "timeseries"

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.standardizer: Standardizer | None = None
        self.net: nn.Module | None = None
        self.history: dict[str, Any] = {}

    def _build_network(self, length: int, n_features: int) -> nn.Module:
        raise NotImplementedError

    @property
    def is_fitted(self) -> bool:
        """True once fit ran or state was loaded."""
        return self.net is not None and self.standardizer is not None

    @property
    def window(self) -> int:
        """Rows per window L."""
        return int(self.config.window)

    def _fitted(self) -> tuple[Standardizer, nn.Module]:
        return self._require_fitted(self.standardizer), self._require_fitted(self.net)

    def fit(self, data: Any, *, seed: int = 0, progress: Progress = no_progress) -> None:
        """Fit on normal rows in time order.

        Args:
            data: float32 (N, D) raw rows, or a list of (N_i, D) recordings (windows never span
                two recordings). The last `val_fraction` of each recording's windows (in time)
                is held out for early stopping.
            seed: seeds the weight init and the batch order.

        Raises:
            DataError: bad rows, or fewer rows than one window plus two.
        """
        cfg = self.config
        segments = _segments(data)
        standardizer = Standardizer.fit(np.concatenate(segments))
        train_parts, val_parts = [], []
        for seg in segments:
            if seg.shape[0] < cfg.window + 2:
                raise DataError(
                    f"{self.name}: a recording has {seg.shape[0]} rows; it needs at least "
                    f"window + 2 = {cfg.window + 2}"
                )
            windows = np.array(sliding_windows(standardizer.transform(seg), cfg.window, 1))
            n_val = int(round(cfg.val_fraction * len(windows)))
            n_val = n_val if len(windows) - n_val >= 2 else 0
            train_parts.append(windows[: len(windows) - n_val])
            val_parts.append(windows[len(windows) - n_val :])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = self._build_network(cfg.window, segments[0].shape[1])
            self.history = train_network(
                net,
                lambda m, b: m.loss(b),
                np.concatenate(train_parts),
                np.concatenate(val_parts),
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                weight_decay=cfg.weight_decay,
                patience=cfg.patience,
                seed=seed,
                progress=progress,
                label=self.name,
            )
        self.history.update(
            n_train_windows=int(sum(len(p) for p in train_parts)),
            n_val_windows=int(sum(len(p) for p in val_parts)),
        )
        self.standardizer, self.net = standardizer, net

    def windows_of(self, data: Any) -> np.ndarray:
        """float32 (M, L, D) windows: `data` itself when 3-D, else sliding windows of rows."""
        array = np.asarray(data, dtype=np.float32)
        standardizer, _ = self._fitted()
        n_features = standardizer.mean.shape[0]
        if array.ndim == 3:
            if array.shape[1:] != (self.window, n_features):
                raise DataError(
                    f"windows must be (B, {self.window}, {n_features}); got {array.shape}"
                )
            if not np.isfinite(array).all():
                raise DataError("windows contain NaN or inf")
            return array
        rows = check_rows(array, n_features)
        return sliding_windows(rows, self.window, int(self.config.stride))

    def score(self, data: Any, progress: Progress = no_progress) -> ScoreOutput:
        """Raw scores float32 (M,), higher = more anomalous.

        Args:
            data: raw windows (B, L, D) -> one score each; or raw rows (N, D) in time order ->
                one score per window, i.e. for rows `window_end_rows(N, L, stride)`.
        """
        standardizer, net = self._fitted()
        windows = self.windows_of(data)
        out = np.empty(len(windows), dtype=np.float32)
        step = 4096
        net.eval()
        with torch.no_grad():
            for start in range(0, len(windows), step):
                batch = standardizer.transform(windows[start : start + step])
                out[start : start + step] = net(torch.from_numpy(batch)).numpy()
                progress(min(start + step, len(windows)), len(windows), f"{self.name} score")
        return ScoreOutput(scores=out)

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Standardizer ("std.*") and weights ("net.<param>")."""
        return standardized_net_state(*self._fitted())

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Rebuild the network from the config and the stored feature count, then load it."""
        self.standardizer, self.net = load_standardized_net(
            self.name, arrays, lambda n_features: self._build_network(self.window, n_features)
        )

    def export_spec(self) -> ExportSpec:
        """WindowsGraph: raw windows (B, L, D) -> ("score",) (B,); postprocess kind "window"."""
        standardizer, net = self._fitted()
        module = WindowsGraph(standardizer, copy.deepcopy(net)).eval()
        ramp = np.linspace(-1.0, 1.0, self.window, dtype=np.float32)[:, None]
        example = standardizer.mean + ramp * standardizer.scale  # (L, D)
        return ExportSpec(
            module=module,
            example_input=np.stack([example, example[::-1]]).astype(np.float32),
            input_name="windows",
            output_names=("score",),
            postprocess={
                "kind": POSTPROCESS_KIND,
                "window": self.window,
                "stride": int(self.config.stride),
            },
        )

    def describe(self) -> dict[str, Any]:
        """Training history and constant columns."""
        info: dict[str, Any] = dict(self.history)
        if self.standardizer is not None:
            info["constant_columns"] = self.standardizer.constant_columns.tolist()
        return info
