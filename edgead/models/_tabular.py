"""Shared pieces of the tabular detectors (ae, vae, deep_svdd, iforest).

- `Standardizer`: per-column mean/scale fitted on the normal training rows. Constant columns
  (std == 0, or std below 1e-12 times the column's magnitude) get scale 1 and a warning, so after
  standardisation they are all zeros in training and `x - mean` at scoring time.
- `RowsGraph`: the export module; it folds the standardisation into the graph, so the exported
  model takes raw float32 rows (B, D) and returns ("score",) float32 (B,).
- `train_network`: seeded mini-batch Adam loop with early stopping on a normal validation split
  and a progress callback.
- `TabularNetDetector`: the fit / score / state / export plumbing shared by the torch detectors;
  a subclass only builds its network (`_build_network`) and may prepare it (`_before_training`).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from edgead.errors import ConfigError, DataError
from edgead.models.base import BaseDetector, ExportSpec, Progress, ScoreOutput, no_progress
from edgead.ops.rows import check_rows

logger = logging.getLogger(__name__)

_REL_CONST = 1e-12


class Standardizer:
    """Column-wise z-scoring: (rows - mean) / scale.

    mean, scale: float32 (D,). scale is the population std (ddof=0) of the training rows;
    columns whose std is 0 (or < 1e-12 * max(|mean|, 1)) get scale 1 and are listed in
    `constant_columns` (logged as a warning at fit time).
    """

    def __init__(
        self, mean: np.ndarray, scale: np.ndarray, constant: np.ndarray | None = None
    ) -> None:
        self.mean = np.ascontiguousarray(mean, dtype=np.float32)
        self.scale = np.ascontiguousarray(scale, dtype=np.float32)
        self.constant = (
            np.zeros(self.mean.shape, dtype=bool)
            if constant is None
            else np.asarray(constant, dtype=bool)
        )

    @classmethod
    def fit(cls, rows: np.ndarray) -> Standardizer:
        """Fit on float32 (N, D) normal rows (computed in float64)."""
        data = np.asarray(rows, dtype=np.float64)
        mean = data.mean(axis=0)
        std = data.std(axis=0)
        const = std <= _REL_CONST * np.maximum(np.abs(mean), 1.0)
        if const.any():
            logger.warning(
                "%d constant column(s) in the training rows (indices %s); "
                "they get scale 1 and contribute nothing to the scores of "
                "rows that keep the training value",
                int(const.sum()),
                np.flatnonzero(const)[:10].tolist(),
            )
        scale = np.where(const, 1.0, std)
        return cls(mean, scale, const)

    @property
    def constant_columns(self) -> np.ndarray:
        """Indices of columns that were constant in training (scale forced to 1)."""
        return np.flatnonzero(self.constant).astype(np.int64)

    def transform(self, rows: np.ndarray) -> np.ndarray:
        """float32 (N, D) standardised rows."""
        return ((np.asarray(rows, dtype=np.float32) - self.mean) / self.scale).astype(np.float32)

    def state_arrays(self, prefix: str = "std.") -> dict[str, np.ndarray]:
        """{prefix+'mean', prefix+'scale'} float32 (D,) and prefix+'constant' bool (D,)."""
        return {
            prefix + "mean": self.mean,
            prefix + "scale": self.scale,
            prefix + "constant": self.constant,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str = "std.") -> Standardizer:
        """Inverse of `state_arrays`."""
        return cls(
            arrays[prefix + "mean"], arrays[prefix + "scale"], arrays.get(prefix + "constant")
        )


class RowsGraph(nn.Module):
    """Export wrapper: raw rows -> standardise -> `scorer` -> ("score",).

    forward(rows float32 (B, D)) -> tuple[float32 (B,)]. Uses only Sub/Div and the scorer's ops.
    """

    def __init__(self, standardizer: Standardizer, scorer: nn.Module) -> None:
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(standardizer.mean.copy()))
        self.register_buffer("scale", torch.from_numpy(standardizer.scale.copy()))
        self.scorer = scorer

    def forward(self, rows: torch.Tensor) -> tuple[torch.Tensor]:
        """Score raw rows (B, D) float32; returns a 1-tuple holding scores (B,) float32."""
        return (self.scorer((rows - self.mean) / self.scale),)


class MemberEnsemble(nn.Module):
    """Seed ensemble: the mean of the members' standardised scores.

    forward(x float32 (B, D)) -> float32 (B,): mean_k (score_k(x) - center_k) / spread_k, where
    center_k / spread_k (buffers, float32 (K,)) are the mean and std of member k's scores on
    the training rows (`calibrate`), so members weigh alike whatever their score scale.
    Export-safe (Stack, Sub, Div, ReduceMean on top of the members' ops).
    """

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.register_buffer("center", torch.zeros(len(members)))
        self.register_buffer("spread", torch.ones(len(members)))

    def calibrate(self, rows: torch.Tensor, step: int = 8192) -> None:
        """Set center / spread from the members' scores on standardised rows (N, D).

        A member whose training scores do not vary (std 0) gets spread 1 (logged).
        """
        self.eval()
        with torch.no_grad():
            scores = torch.cat(
                [self._member_scores(rows[i : i + step]) for i in range(0, rows.shape[0], step)]
            ).double()
        center, spread = scores.mean(dim=0), scores.std(dim=0, correction=0)
        flat = spread <= 0
        if bool(flat.any()):
            logger.warning("ensemble: constant training scores for member(s) %s", flat.nonzero())
        self.center.copy_(center.float())
        self.spread.copy_(torch.where(flat, torch.ones_like(spread), spread).float())

    def _member_scores(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K) raw scores of the K members."""
        return torch.stack([member(x) for member in self.members], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mean standardised member score (B,) float32."""
        return ((self._member_scores(x) - self.center) / self.spread).mean(dim=1)


def validate_common(cfg: Any) -> None:
    """ConfigError unless the shared training fields of a tabular config are in range."""
    checks = {
        "epochs": cfg.epochs >= 1,
        "batch_size": cfg.batch_size >= 1,
        "lr": cfg.lr > 0,
        "weight_decay": cfg.weight_decay >= 0,
        "val_fraction": 0 <= cfg.val_fraction < 1,
        "patience": cfg.patience >= 0,
        "dropout": 0 <= getattr(cfg, "dropout", 0.0) < 1,
        "hidden_sizes": len(cfg.hidden_sizes) >= 1 and min(cfg.hidden_sizes) >= 1,
        "n_members": 1 <= getattr(cfg, "n_members", 1) <= 16,
        "min_steps": getattr(cfg, "min_steps", 0) >= 0,
    }
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        values = ", ".join(f"{k}={getattr(cfg, k)!r}" for k in bad)
        raise ConfigError(
            f"{type(cfg).__name__}: out of range: {values}; need epochs, "
            "batch_size >= 1, lr > 0, weight_decay >= 0, 0 <= val_fraction < 1, "
            "patience >= 0, 0 <= dropout < 1, non-empty positive hidden_sizes, "
            "1 <= n_members <= 16, min_steps >= 0"
        )


def make_mlp(
    sizes: list[int],
    *,
    bias: bool = True,
    final_activation: bool = False,
    negative_slope: float = 0.0,
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> nn.Sequential:
    """Linear layers sizes[0] -> ... -> sizes[-1] with (leaky) ReLU between them.

    Args:
        sizes: layer widths including input and output.
        bias: add bias terms (Deep SVDD uses False).
        final_activation: also put an activation after the last layer.
        negative_slope: 0 for ReLU, > 0 for LeakyReLU.
        dropout: drop probability after each activation while training (identity in eval mode,
            so it leaves no op in the exported graph).
        batch_norm: BatchNorm1d between each activated Linear and its activation (PyOD's
            LinearBlock order: Linear -> BN -> act -> dropout); in eval mode it is a fixed
            per-feature affine map (running statistics).
    """
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1], bias=bias))
        if i < len(sizes) - 2 or final_activation:
            if batch_norm:
                layers.append(nn.BatchNorm1d(sizes[i + 1]))
            layers.append(nn.LeakyReLU(negative_slope) if negative_slope > 0 else nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def split_validation(n_rows: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx) int64: a seeded random `val_fraction` of rows for early stopping.

    val_idx is empty when val_fraction is 0 or fewer than 10 rows would remain for training.
    """
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_rows).astype(np.int64)
    n_val = int(round(val_fraction * n_rows))
    if n_val == 0 or n_rows - n_val < 10:
        return np.sort(perm), np.zeros(0, dtype=np.int64)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def scaled_epochs(cfg: Any, n_train: int) -> tuple[int, int]:
    """(epochs, patience) for `n_train` training rows.

    cfg.epochs / cfg.patience, unless cfg has `min_steps` > 0 and fewer than that many optimiser
    steps (ceil(n_train / batch_size) per epoch) would run: then both are scaled up by the same
    factor, so a small table gets as many updates as `min_steps` (and early stopping the same
    share of them).
    """
    min_steps = int(getattr(cfg, "min_steps", 0))
    per_epoch = max(1, math.ceil(n_train / cfg.batch_size))
    if min_steps <= 0 or cfg.epochs * per_epoch >= min_steps:
        return cfg.epochs, cfg.patience
    epochs = math.ceil(min_steps / per_epoch)
    return epochs, math.ceil(cfg.patience * epochs / cfg.epochs)


def train_network(
    net: nn.Module,
    loss_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    patience: int,
    seed: int,
    progress: Progress = no_progress,
    label: str = "train",
    drop_last: bool = False,
) -> dict[str, Any]:
    """Train `net` with Adam on `loss_fn` and keep the weights with the best validation loss.

    Args:
        net: module to train in place (ends with the best weights loaded, in eval mode).
        loss_fn: (net, batch float32 (B, D)) -> per-row loss float32 (B,); its mean is minimised.
        train_rows, val_rows: standardised float32 (N, D) / (M, D); M may be 0 (then the
            training loss decides the best epoch and no early stopping happens).
        epochs: maximum number of passes over train_rows.
        patience: stop after this many epochs without a validation improvement (0 = never).
        seed: seeds the batch order (a private torch.Generator).
        progress: called as progress(epoch, epochs, label) after each epoch.
        drop_last: skip an epoch's last batch when it is smaller than batch_size (as PyOD's
            loader; needed with batch norm, which cannot train on a single row). Never skips
            the only batch.

    Returns:
        {"epochs_run", "best_epoch", "best_val_loss", "train_loss"} (losses are per-row means).
    """
    gen = torch.Generator().manual_seed(seed)
    x_train = torch.from_numpy(np.ascontiguousarray(train_rows, dtype=np.float32))
    x_val = torch.from_numpy(np.ascontiguousarray(val_rows, dtype=np.float32))
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    best_loss, best_epoch, best_state = math.inf, 0, copy.deepcopy(net.state_dict())
    train_loss = math.nan
    n = x_train.shape[0]
    epoch = 0
    for epoch in range(1, epochs + 1):
        net.train()
        order = torch.randperm(n, generator=gen)
        total, seen = 0.0, 0
        for start in range(0, n, batch_size):
            if drop_last and start > 0 and start + batch_size > n:
                break
            batch = x_train[order[start : start + batch_size]]
            loss = loss_fn(net, batch).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * batch.shape[0]
            seen += batch.shape[0]
        train_loss = total / seen
        if not math.isfinite(train_loss):
            raise DataError(
                f"{label}: training loss became {train_loss} at epoch {epoch}; "
                "check the data for extreme values or lower the learning rate"
            )
        monitor = _mean_loss(net, loss_fn, x_val, batch_size) if x_val.shape[0] else train_loss
        if monitor < best_loss - 1e-7 * abs(best_loss if math.isfinite(best_loss) else 0.0):
            best_loss, best_epoch = monitor, epoch
            best_state = copy.deepcopy(net.state_dict())
        progress(epoch, epochs, label)
        if patience > 0 and epoch - best_epoch >= patience:
            logger.info(
                "%s: early stop at epoch %d (best %d, val loss %.5g)",
                label,
                epoch,
                best_epoch,
                best_loss,
            )
            break
    net.load_state_dict(best_state)
    net.eval()
    return {
        "epochs_run": epoch,
        "best_epoch": best_epoch,
        "best_val_loss": float(best_loss),
        "train_loss": float(train_loss),
    }


def _mean_loss(
    net: nn.Module,
    loss_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    rows: torch.Tensor,
    batch_size: int,
) -> float:
    """Mean per-row loss over `rows` in eval mode, without gradients."""
    net.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, rows.shape[0], max(batch_size, 1024)):
            batch = rows[start : start + max(batch_size, 1024)]
            total += float(loss_fn(net, batch).sum())
    return total / rows.shape[0]


def standardized_net_state(standardizer: Standardizer, net: nn.Module) -> dict[str, np.ndarray]:
    """A fitted (standardizer, network) pair as arrays: "std.mean", "std.scale" and the
    network's weights as "net.<param>" (float32 copies)."""
    arrays = standardizer.state_arrays()
    arrays.update(
        {f"net.{k}": v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}
    )
    return arrays


def load_standardized_net(
    name: str, arrays: dict[str, np.ndarray], build: Callable[[int], nn.Module]
) -> tuple[Standardizer, nn.Module]:
    """(standardizer, eval-mode network) from `standardized_net_state`'s arrays; `build(D)`
    makes the untrained network for D input features (D from the stored standardizer).

    Raises:
        DataError: the arrays do not fit the network the config builds (named by `name`).
    """
    try:
        standardizer = Standardizer.from_arrays(arrays)
        net = build(int(standardizer.mean.shape[0]))
        net.load_state_dict(
            {k[4:]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k[:4] == "net."}
        )
    except (KeyError, RuntimeError) as exc:
        raise DataError(
            f"{name}: stored state does not match the config ({exc}); "
            "was the run written with another config or detector?"
        ) from exc
    net.eval()
    return standardizer, net


class TabularNetDetector(BaseDetector):
    """fit / score / state / export for a torch network over standardised rows.

    Subclasses set `config_cls` (with epochs, batch_size, lr, weight_decay, val_fraction,
    patience) and implement `_build_network(n_features)` returning a module with
    `forward(x (B, D)) -> score (B,)` (export-safe, deterministic) and
    `loss(x (B, D)) -> per-row training loss (B,)`.
    """

    modality: ClassVar[str] = "tabular"

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.standardizer: Standardizer | None = None
        self.net: nn.Module | None = None
        self.history: dict[str, Any] = {}

    def _build_network(self, n_features: int) -> nn.Module:
        raise NotImplementedError

    def _before_training(self, net: nn.Module, train_rows: np.ndarray) -> None:
        """Hook run after init, before the first epoch (Deep SVDD sets its centre here)."""

    @property
    def is_fitted(self) -> bool:
        """True once fit ran or state was loaded."""
        return self.net is not None and self.standardizer is not None

    def _fitted(self) -> tuple[Standardizer, nn.Module]:
        """(standardizer, net), or NotFittedError."""
        return self._require_fitted(self.standardizer), self._require_fitted(self.net)

    def fit(self, data: Any, *, seed: int = 0, progress: Progress = no_progress) -> None:
        """Fit on normal rows.

        Args:
            data: float32 (N, D) raw rows, N >= 2, finite.
            seed: seeds the weight init, the validation split and the batch order.
            progress: progress(epoch, epochs, name) after each epoch.

        Raises:
            DataError: rows not (N, D) finite numbers, or fewer than 2 rows.
        """
        rows = check_rows(data)
        if rows.shape[0] < 2:
            raise DataError(f"{self.name} needs at least 2 training rows, got {rows.shape[0]}")
        standardizer = Standardizer.fit(rows)
        z = standardizer.transform(rows)
        n_members = int(getattr(self.config, "n_members", 1))
        if n_members == 1:
            net, self.history = self._fit_member(z, seed, progress, self.name)
        else:
            members, histories = [], []
            for k in range(n_members):
                label = f"{self.name} member {k + 1}/{n_members}"
                member, history = self._fit_member(z, seed + k, progress, label)
                members.append(member)
                histories.append(history)
            net = MemberEnsemble(members)
            net.calibrate(torch.from_numpy(z))
            self.history = {**histories[0], "members": histories}
        self.standardizer, self.net = standardizer, net

    def _fit_member(
        self, z: np.ndarray, seed: int, progress: Progress, label: str
    ) -> tuple[nn.Module, dict[str, Any]]:
        """One network trained on standardised rows z (N, D) with `seed` (init, validation split,
        batch order); returns (net in eval mode, training history)."""
        cfg = self.config
        train_idx, val_idx = split_validation(z.shape[0], cfg.val_fraction, seed)
        epochs, patience = scaled_epochs(cfg, int(train_idx.size))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = self._build_network(z.shape[1])
            self._before_training(net, z[train_idx])
            history = train_network(
                net,
                lambda m, b: m.loss(b),
                z[train_idx],
                z[val_idx],
                epochs=epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                weight_decay=cfg.weight_decay,
                patience=patience,
                seed=seed,
                progress=progress,
                label=label,
                drop_last=bool(getattr(cfg, "batch_norm", False)),
            )
        history.update(n_train=int(train_idx.size), n_val=int(val_idx.size))
        return net, history

    def _build_model(self, n_features: int) -> nn.Module:
        """The scoring module for D inputs: one network, or a MemberEnsemble of n_members."""
        n_members = int(getattr(self.config, "n_members", 1))
        if n_members == 1:
            return self._build_network(n_features)
        return MemberEnsemble([self._build_network(n_features) for _ in range(n_members)])

    def score(self, data: Any, progress: Progress = no_progress) -> ScoreOutput:
        """Raw scores float32 (N,) for raw rows (N, D); higher = more anomalous."""
        standardizer, net = self._fitted()
        rows = check_rows(data, standardizer.mean.shape[0])
        z = torch.from_numpy(standardizer.transform(rows))
        out = np.empty(rows.shape[0], dtype=np.float32)
        step = 8192
        net.eval()
        with torch.no_grad():
            for start in range(0, z.shape[0], step):
                out[start : start + step] = net(z[start : start + step]).numpy()
                progress(min(start + step, z.shape[0]), z.shape[0], f"{self.name} score")
        return ScoreOutput(scores=out)

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Standardizer ("std.mean", "std.scale") and weights ("net.<param>")."""
        return standardized_net_state(*self._fitted())

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Rebuild the network from the config and the stored input width, then load weights."""
        self.standardizer, self.net = load_standardized_net(self.name, arrays, self._build_model)

    def export_spec(self) -> ExportSpec:
        """RowsGraph(standardizer, net): raw rows (B, D) -> ("score",) (B,)."""
        standardizer, net = self._fitted()
        module = RowsGraph(standardizer, copy.deepcopy(net)).eval()
        example = (standardizer.mean + standardizer.scale)[None, :].repeat(2, 0)
        return ExportSpec(
            module=module,
            example_input=example.astype(np.float32),
            input_name="rows",
            output_names=("score",),
            postprocess={"kind": "rows"},
        )

    def describe(self) -> dict[str, Any]:
        """Training history (epochs run, best epoch, losses) and constant columns."""
        info: dict[str, Any] = dict(self.history)
        if self.standardizer is not None:
            info["constant_columns"] = self.standardizer.constant_columns.tolist()
        return info
