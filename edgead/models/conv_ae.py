"""Convolutional autoencoder ("conv_ae") and VAE ("conv_vae") trained from scratch on images.

Both take uint8 (B, S, S, 3) RGB, scale to 0..1 and average-pool to `work_size` px inside the
graph, encode with stride-2 convs down to an 8 x 8 map, pass a dense latent of `latent_dim`, and
decode with transposed convs to a sigmoid reconstruction at `work_size`.

- anomaly map: squared reconstruction error averaged over RGB, (B, work_size, work_size), in
  (0..1 intensity)^2 units; the runtime upsamples it to S and blurs it ("graph" kind).
- score: the training loss of the image: mean squared error over pixels and channels, plus for the
  VAE `kl_weight * KL(q(z|x) || N(0, I)) / (3 * work_size^2)` (KL in nats; the encoder mean is used
  at test time, so scores are deterministic).

These are honest from-scratch baselines: fixed budgets, no tuning on test data.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgead.errors import ConfigError
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

#: spatial side of the encoder's last conv map (px of the work-size image / 2^n_down).
_BOTTLENECK_SIDE = 8


@dataclass(frozen=True, kw_only=True)
class ConvAEConfig:
    """Conv AE / VAE settings.

    image_size: square input side in px (the bundle input).
    work_size: side the graph average-pools the input to (image_size / work_size must be an
        integer, work_size = 8 * 2^k with k >= 1).
    base_channels: channels of the first conv (doubled per stage, capped at 4x).
    latent_dim: size of the dense bottleneck.
    kl_weight: weight of the KL term (VAE only; ignored by the AE).
    epochs, lr, weight_decay, batch_size: Adam training budget.
    blur_sigma: Gaussian sigma (px at image_size) applied to the upsampled error map.
    """

    image_size: int = 256
    work_size: int = 64
    base_channels: int = 32
    latent_dim: int = 128
    kl_weight: float = 1.0
    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 16
    blur_sigma: float = 4.0

    def validate(self) -> None:
        """Raise ConfigError on values that cannot work."""
        if (
            self.work_size < 2 * _BOTTLENECK_SIDE
            or not math.log2(self.work_size / _BOTTLENECK_SIDE).is_integer()
        ):
            raise ConfigError(
                f"conv_ae: work_size must be 8 * 2^k (16, 32, 64, 128, ...), got {self.work_size}"
            )
        if self.image_size % self.work_size:
            raise ConfigError(
                f"conv_ae: image_size {self.image_size} must be a multiple of "
                f"work_size {self.work_size}"
            )
        if min(self.base_channels, self.latent_dim, self.epochs, self.batch_size) < 1:
            raise ConfigError("conv_ae: base_channels, latent_dim, epochs, batch_size must be >= 1")
        if self.lr <= 0 or self.kl_weight < 0 or self.blur_sigma < 0 or self.weight_decay < 0:
            raise ConfigError("conv_ae: lr must be > 0; kl_weight, blur_sigma, weight_decay >= 0")


class ConvAutoencoder(nn.Module):
    """uint8 (B, S, S, 3) -> ("score" (B,), "anomaly_map" (B, w, w)); see module docstring.

    `reconstruct` gives the pieces training needs (input, reconstruction, mu, logvar).
    """

    def __init__(self, cfg: ConvAEConfig, variational: bool) -> None:
        super().__init__()
        self.variational = variational
        self.pool = cfg.image_size // cfg.work_size
        self.kl_scale = float(cfg.kl_weight) / (3 * cfg.work_size * cfg.work_size)
        n_down = int(round(math.log2(cfg.work_size / _BOTTLENECK_SIDE)))
        widths = [min(cfg.base_channels * 2**i, 4 * cfg.base_channels) for i in range(n_down)]
        enc: list[nn.Module] = []
        in_ch = 3
        for width in widths:
            enc += [nn.Conv2d(in_ch, width, 4, 2, 1), nn.LeakyReLU(0.2)]
            in_ch = width
        self.encoder = nn.Sequential(*enc)
        self.flat = in_ch * _BOTTLENECK_SIDE * _BOTTLENECK_SIDE
        self.bottleneck_ch = in_ch
        self.to_latent = nn.Linear(self.flat, cfg.latent_dim * (2 if variational else 1))
        self.from_latent = nn.Linear(cfg.latent_dim, self.flat)
        dec: list[nn.Module] = []
        out_widths = list(reversed(widths[:-1])) + [cfg.base_channels]
        for width in out_widths:
            dec += [nn.ConvTranspose2d(in_ch, width, 4, 2, 1), nn.LeakyReLU(0.2)]
            in_ch = width
        dec += [nn.Conv2d(in_ch, 3, 3, 1, 1), nn.Sigmoid()]
        self.decoder = nn.Sequential(*dec)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """float32 (B, 3, w, w) in 0..1 from uint8 (B, S, S, 3)."""
        x = images.to(torch.float32).permute(0, 3, 1, 2) * (1.0 / 255.0)
        return F.avg_pool2d(x, self.pool) if self.pool > 1 else x

    def reconstruct(
        self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(reconstruction (B, 3, w, w), mu (B, L), logvar (B, L) or None) from prepared x."""
        code = self.to_latent(self.encoder(x).flatten(1))
        logvar = None
        if self.variational:
            mu, logvar = code.chunk(2, dim=1)
            logvar = logvar.clamp(-10.0, 10.0)
            z = mu
            if sample:
                noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
                z = mu + torch.exp(0.5 * logvar) * noise
        else:
            mu = code
            z = code
        hidden = self.from_latent(z).view(
            -1, self.bottleneck_ch, _BOTTLENECK_SIDE, _BOTTLENECK_SIDE
        )
        return self.decoder(F.leaky_relu(hidden, 0.2)), mu, logvar

    def image_loss(
        self, x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-image loss (B,), error map (B, w, w)): MSE (+ scaled KL for the VAE)."""
        err = ((x - recon) ** 2).mean(dim=1)
        loss = err.mean(dim=(1, 2))
        if logvar is not None:
            kl = 0.5 * (mu * mu + torch.exp(logvar) - logvar - 1.0).sum(dim=1)
            loss = loss + self.kl_scale * kl
        return loss, err

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(score float32 (B,), anomaly_map float32 (B, w, w)) from uint8 (B, S, S, 3)."""
        x = self.prepare(images)
        recon, mu, logvar = self.reconstruct(x)
        return self.image_loss(x, recon, mu, logvar)


class _ConvAEBase(ScratchNetDetector):
    """Shared fit/score for the AE and the VAE (state/export: ScratchNetDetector)."""

    config_cls = ConvAEConfig
    variational = False

    def fit(
        self,
        data: Sequence[np.ndarray] | np.ndarray,
        *,
        seed: int = 0,
        progress: Progress = no_progress,
    ) -> None:
        """Train on normal uint8 (S, S, 3) RGB images (reconstruction loss, + KL for the VAE)."""
        cfg = self.config
        net, prepared = seeded_net_and_inputs(
            data,
            cfg.image_size,
            cfg.batch_size,
            seed,
            lambda: ConvAutoencoder(cfg, self.variational),
            ConvAutoencoder.prepare,
        )
        generator = seeded_generator(seed + 1)

        def batch_loss(x: torch.Tensor) -> torch.Tensor:
            recon, mu, logvar = net.reconstruct(x, sample=True, generator=generator)
            return net.image_loss(x, recon, mu, logvar)[0].mean()

        self.train_losses_ = train_epochs(
            net,
            prepared,
            batch_loss,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            generator=generator,
            progress=progress,
            description=f"{self.name}: epochs",
        )
        net.eval()
        self._net = net

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        net = ConvAutoencoder(self.config, self.variational)
        load_module_state("net.", net, arrays)
        net.eval()
        self._net = net


@register_detector("conv_ae")
class ConvAE(_ConvAEBase):
    """Convolutional autoencoder; score = mean squared reconstruction error."""

    variational = False


@register_detector("conv_vae")
class ConvVAE(_ConvAEBase):
    """Convolutional VAE; score = mean squared reconstruction error + scaled KL."""

    variational = True
