"""One-class Deep SVDD on images (Ruff et al., 2018), trained from scratch ("deep_svdd_image").

The network is bias-free (convs without bias, batch norm without affine parameters, LeakyReLU,
max-pooling) so it cannot map every input to the centre by learning a constant. It works on the
input average-pooled to `work_size` px: three conv/pool stages give a (B, C, g, g) map, a bias-free
1x1 conv gives one `rep_dim` embedding per grid cell, and the image embedding is their mean.
The centre c is the mean image embedding of the training images under the initial weights
(coordinates closer to 0 than 0.1 pushed to +-0.1, as in the paper) and stays fixed.

- score: ||embedding - c||^2 (squared L2, embedding units), the one-class objective.
- anomaly map: ||cell embedding - c||^2 per grid cell (B, g, g); not trained directly (the
  objective is on the mean), reported so every image detector gives a map ("graph" kind).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgead.errors import ConfigError, DataError
from edgead.models._image_common import (
    ScratchNetDetector,
    load_module_state,
    seeded_generator,
    seeded_net_and_inputs,
    train_epochs,
)
from edgead.models.base import (
    Progress,
    no_progress,
    register_detector,
)

logger = logging.getLogger(__name__)

_N_STAGES = 3
_CENTRE_EPS = 0.1


@dataclass(frozen=True, kw_only=True)
class DeepSVDDImageConfig:
    """Image Deep SVDD settings.

    image_size: square input side in px; work_size: side after in-graph average pooling
        (image_size must be a multiple of it, work_size a multiple of 8).
    base_channels: channels of the first conv (doubled per stage).
    rep_dim: embedding size.
    epochs, lr, weight_decay, batch_size: Adam training budget.
    blur_sigma: Gaussian sigma (px at image_size) applied to the upsampled map.
    """

    image_size: int = 256
    work_size: int = 64
    base_channels: int = 16
    rep_dim: int = 64
    epochs: int = 30
    lr: float = 1e-3  # Adam default; the paper's 1e-4 assumes ~150 epochs + AE pretraining
    weight_decay: float = 1e-6
    batch_size: int = 16
    blur_sigma: float = 4.0

    def validate(self) -> None:
        """Raise ConfigError on values that cannot work."""
        step = 2**_N_STAGES
        if self.work_size < step or self.work_size % step:
            raise ConfigError(
                f"deep_svdd_image: work_size must be a multiple of {step}, got {self.work_size}"
            )
        if self.image_size % self.work_size:
            raise ConfigError(
                f"deep_svdd_image: image_size {self.image_size} must be a "
                f"multiple of work_size {self.work_size}"
            )
        if min(self.base_channels, self.rep_dim, self.epochs, self.batch_size) < 1:
            raise ConfigError(
                "deep_svdd_image: base_channels, rep_dim, epochs and batch_size must be >= 1"
            )
        if self.lr <= 0 or self.weight_decay < 0 or self.blur_sigma < 0:
            raise ConfigError("deep_svdd_image: lr must be > 0; weight_decay, blur_sigma >= 0")


class SVDDNet(nn.Module):
    """Bias-free conv net: uint8 (B, S, S, 3) -> per-cell embeddings (B, rep_dim, g, g)."""

    centre: torch.Tensor  # buffer

    def __init__(self, cfg: DeepSVDDImageConfig) -> None:
        super().__init__()
        self.pool = cfg.image_size // cfg.work_size
        layers: list[nn.Module] = []
        in_ch = 3
        for i in range(_N_STAGES):
            width = cfg.base_channels * 2**i
            layers += [
                nn.Conv2d(in_ch, width, 5, padding=2, bias=False),
                nn.BatchNorm2d(width, eps=1e-4, affine=False),
                nn.LeakyReLU(0.1),
                nn.MaxPool2d(2),
            ]
            in_ch = width
        layers.append(nn.Conv2d(in_ch, cfg.rep_dim, 1, bias=False))
        self.body = nn.Sequential(*layers)
        self.register_buffer("centre", torch.zeros(cfg.rep_dim))

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """float32 (B, 3, w, w) in 0..1 from uint8 (B, S, S, 3)."""
        x = images.to(torch.float32).permute(0, 3, 1, 2) * (1.0 / 255.0)
        return F.avg_pool2d(x, self.pool) if self.pool > 1 else x

    def cells(self, x: torch.Tensor) -> torch.Tensor:
        """float32 (B, rep_dim, g, g) cell embeddings from prepared x (B, 3, w, w)."""
        return self.body(x)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(score (B,) squared distance of the mean embedding to c, map (B, g, g))."""
        cells = self.cells(self.prepare(images))
        centre = self.centre.view(1, -1, 1, 1)
        score = ((cells.mean(dim=(2, 3), keepdim=True) - centre) ** 2).sum(dim=(1, 2, 3))
        return score, ((cells - centre) ** 2).sum(dim=1)


def _recalibrate_batch_norm(net: SVDDNet, prepared: torch.Tensor, batch_size: int) -> None:
    """Set the BN running statistics to the exact averages over `prepared` under final weights.

    The running averages gathered during a short training run still remember the initial
    weights; eval mode would then score with statistics the net never trained with.
    """
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the passes below
    net.train()
    with torch.no_grad():
        for lo in range(0, len(prepared), batch_size):
            net.cells(prepared[lo : lo + batch_size])
    for norm in norms:
        norm.momentum = 0.1


@register_detector("deep_svdd_image")
class DeepSVDDImage(ScratchNetDetector):
    """One-class Deep SVDD on images (see module docstring; state/export: ScratchNetDetector)."""

    config_cls = DeepSVDDImageConfig

    def fit(
        self,
        data: Sequence[np.ndarray] | np.ndarray,
        *,
        seed: int = 0,
        progress: Progress = no_progress,
    ) -> None:
        """Fix the centre from the initial net, then minimise the mean squared distance to it."""
        cfg = self.config
        net, prepared = seeded_net_and_inputs(
            data, cfg.image_size, cfg.batch_size, seed, lambda: SVDDNet(cfg), SVDDNet.prepare
        )
        # Centre: batch-statistics mode (as during training), no gradient.
        net.train()
        with torch.no_grad():
            sums = [
                net.cells(prepared[lo : lo + cfg.batch_size]).mean(dim=(2, 3)).sum(dim=0)
                for lo in range(0, len(prepared), cfg.batch_size)
            ]
            centre = torch.stack(sums).sum(dim=0) / len(prepared)
            small = centre.abs() < _CENTRE_EPS
            centre[small & (centre < 0)] = -_CENTRE_EPS
            centre[small & (centre >= 0)] = _CENTRE_EPS
            net.centre.copy_(centre)

        def batch_loss(x: torch.Tensor) -> torch.Tensor:
            emb = net.cells(x).mean(dim=(2, 3))
            return ((emb - net.centre) ** 2).sum(dim=1).mean()

        self.train_losses_ = train_epochs(
            net,
            prepared,
            batch_loss,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            generator=seeded_generator(seed + 1),
            progress=progress,
            description="deep_svdd_image: epochs",
        )
        _recalibrate_batch_norm(net, prepared, cfg.batch_size)
        net.eval()
        self._net = net

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        net = SVDDNet(self.config)
        load_module_state("net.", net, arrays)
        if not np.all(np.isfinite(net.centre.numpy())):
            raise DataError("deep_svdd_image state has a non-finite centre; retrain the run")
        net.eval()
        self._net = net
