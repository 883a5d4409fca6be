"""Masked autoencoder for images (registry name "mae"; He et al., CVPR 2022), sized for 2 cores.

With `target="pixels"` the graph takes uint8 (B, S, S, 3) RGB, scales to 0..1, average-pools
to `work_size` px, cuts p x p patches (a g x g grid, P = g * g tokens), embeds them with a
learned position embedding, and runs a small ViT encoder on the visible patches only; a
lighter decoder gets the encoded tokens plus a learned mask token at every hidden position and
predicts the pixels of every patch. Training (normal images only) masks a random `mask_ratio`
of the patches per image and step, and minimises the mean squared error of the masked patches.

With `target="features"` the tokens are not pixels but the frozen pretrained backbone's patch
features (`PatchCoreEmbedder`: its maps 3x3-averaged and resized to the finest grid; for
EfficientNet-Lite0 the stride-8 and stride-16 maps, h = w = S / 8 tokens of D = 152 channels),
standardised per channel with the training images' mean and std; the decoder predicts the
standardised feature vectors of the hidden tokens, the error is their mean squared error
(standardised units). The backbone is part of the graph and is not trained; only the ViT is.

Scoring is deterministic (the core shared with "mae_1d": edgead/models/_mae_core.py): the
graph holds `score_draws` FIXED masks (constant index buffers drawn once from a seeded
permutation, split into 1 / (1 - mask_ratio) disjoint visible groups, so every patch is hidden
in the same number of draws). Per patch, the squared error (pixels:
0..1 intensity^2, mean over its pixels and RGB; features: standardised units, mean over the
channels) is averaged over the draws that hid it:
- anomaly map: those per-patch errors, (B, g, g) ("graph" kind; upsampled to S and blurred;
  g = h for features),
- score: their mean over the patches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgead.errors import ConfigError
from edgead.models._image_common import (
    ScratchNetDetector,
    build_backbone,
    load_module_state,
    module_state,
    seeded_generator,
    seeded_net_and_inputs,
    train_epochs,
)
from edgead.models._mae_core import TokenMAE, mask_groups, token_mae_sizes_ok, transformer_sizes
from edgead.models.base import ImagePreprocess, Progress, no_progress, register_detector
from edgead.models.patchcore import PatchCoreEmbedder

#: what the MAE reconstructs.
TARGETS = ("pixels", "features")


@dataclass(frozen=True, kw_only=True)
class MAEConfig:
    """MAE settings.

    image_size: square input side in px.
    target: "pixels" (patches of the image pooled to work_size) or "features" (the frozen
        `backbone`'s patch features on its finest grid; work_size / patch_size unused).
    work_size: side the graph pools to (divides image_size); patch_size: patch side in px at
        work_size (divides work_size). backbone / pretrained: the "features" extractor.
    embed_dim / depth / num_heads: the ViT encoder; decoder_dim / decoder_depth: the decoder.
    mask_ratio: share of patches hidden in training and in every scoring draw; k = 1 / (1 -
        mask_ratio) must be a whole number dividing the patch count (0.5, 0.75, ...).
    score_draws: fixed masks in the graph, a multiple of k.
    epochs, lr, weight_decay, batch_size: Adam training budget; blur_sigma: map blur (px at S).
    """

    image_size: int = 256
    target: str = "features"
    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    work_size: int = 64
    patch_size: int = 8
    embed_dim: int = 128
    depth: int = 4
    num_heads: int = 4
    decoder_dim: int = 64
    decoder_depth: int = 2
    mask_ratio: float = 0.75
    score_draws: int = 8
    epochs: int = 150
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 16
    blur_sigma: float = 4.0

    @property
    def groups(self) -> int:
        """Disjoint visible groups per permutation: 1 / (1 - mask_ratio)."""
        return mask_groups(self.mask_ratio)

    @property
    def grid(self) -> int:
        """Pixel tokens per side: work_size / patch_size (features: the backbone's grid)."""
        return self.work_size // max(self.patch_size, 1)

    def validate(self) -> None:
        """Raise ConfigError on values that cannot work."""
        if self.target not in TARGETS:
            raise ConfigError(f"mae: target must be one of {TARGETS}, got {self.target!r}")
        k = self.groups
        pixels_ok = (
            self.work_size >= 1
            and self.image_size % self.work_size == 0
            and self.patch_size >= 1
            and self.work_size % self.patch_size == 0
            and k >= 1
            and self.grid**2 % k == 0
        )  # "features": the token grid is the backbone's, checked when the net is built
        ok = (
            (self.target == "features" or pixels_ok)
            and token_mae_sizes_ok(self)
            and min(self.epochs, self.batch_size) >= 1
            and self.lr > 0
            and self.weight_decay >= 0
            and self.blur_sigma >= 0
        )
        if not ok:
            raise ConfigError(
                "mae: need (pixels) work_size | image_size, patch_size | work_size, k = 1 / (1 - "
                "mask_ratio) a whole number dividing the token count, score_draws a multiple "
                "of k, num_heads | embed_dim and decoder_dim, depths/epochs/batch_size >= 1, "
                f"lr > 0; got {self}"
            )


class MaskedAutoencoder(TokenMAE):
    """uint8 (B, S, S, 3) -> ("score" (B,), "anomaly_map" (B, g, g)); see the module docstring.

    The transformer (`TokenMAE`) works on any tokens (B, P, token_dim); `patches` makes pixel
    tokens, and `FeatureMAEGraph` feeds it backbone feature tokens through `forward_tokens`.
    """

    def __init__(
        self, cfg: MAEConfig, token_dim: int | None = None, grid: int | None = None
    ) -> None:
        g = cfg.grid if grid is None else grid
        pixels = 3 * cfg.patch_size * cfg.patch_size
        super().__init__(g * g, token_dim or pixels, **transformer_sizes(cfg))
        self.pool = cfg.image_size // cfg.work_size
        self.patch = cfg.patch_size
        self.grid = g

    def patches(self, images: torch.Tensor) -> torch.Tensor:
        """float32 (B, P, 3 p p) patches in 0..1 from uint8 (B, S, S, 3)."""
        x = images.to(torch.float32).permute(0, 3, 1, 2) * (1.0 / 255.0)
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool)
        b, p, g = x.shape[0], self.patch, self.grid
        x = x.reshape(b, 3, g, p, g, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, g * g, 3 * p * p)

    def train_loss(self, patches: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Mean squared error of the hidden patches under a fresh random mask per image."""
        return self.train_losses(patches, generator).mean()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(score (B,), anomaly_map (B, g, g)) from uint8 (B, S, S, 3), fixed masks."""
        return self.forward_tokens(self.patches(images))

    def forward_tokens(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(score (B,), anomaly_map (B, g, g)) from tokens (B, P, token_dim), fixed masks."""
        per_patch = self.hidden_errors(patches, lambda err: err.mean(dim=-1))  # (B, P)
        return per_patch.mean(dim=1), per_patch.reshape(-1, self.grid, self.grid)


class FeatureMAEGraph(nn.Module):
    """uint8 (B, S, S, 3) -> ("score" (B,), "anomaly_map" (B, h, w)): the frozen patch-feature
    extractor, per-channel standardisation (training statistics, constants), then the MAE."""

    def __init__(self, embedder: PatchCoreEmbedder, mae: MaskedAutoencoder) -> None:
        super().__init__()
        self.embedder = embedder
        self.mae = mae
        dim = embedder.embedding_dim
        self.register_buffer("feat_mean", torch.zeros(1, 1, dim))
        self.register_buffer("feat_scale", torch.ones(1, 1, dim))

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Standardised feature tokens float32 (B, h*w, D) from uint8 (B, S, S, 3)."""
        return (self.embedder(images)[0] - self.feat_mean) * self.feat_scale

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(score (B,), anomaly_map (B, h, w)) with the graph's fixed masks."""
        return self.mae.forward_tokens(self.tokens(images))


@register_detector("mae")
class MAE(ScratchNetDetector):
    """Masked autoencoder; score = mean error of masked patches over fixed mask draws."""

    config_cls = MAEConfig

    def _new_net(self) -> nn.Module:
        """The scoring graph for the config's target (features: backbone rebuilt, frozen)."""
        cfg = self.config
        if cfg.target == "pixels":
            return MaskedAutoencoder(cfg)
        embedder = PatchCoreEmbedder(build_backbone(cfg.backbone, cfg.pretrained), cfg.image_size)
        grid = embedder.grid_hw[0]
        if grid**2 % cfg.groups:
            raise ConfigError(
                f"mae: the {grid} x {grid} feature grid of {cfg.backbone!r} at {cfg.image_size}"
                f" px has {grid**2} tokens, not divisible by 1 / (1 - mask_ratio) = "
                f"{cfg.groups}; change image_size or mask_ratio"
            )
        mae = MaskedAutoencoder(cfg, embedder.embedding_dim, grid)
        return FeatureMAEGraph(embedder, mae)

    def fit(
        self,
        data: Sequence[np.ndarray] | np.ndarray,
        *,
        seed: int = 0,
        progress: Progress = no_progress,
    ) -> None:
        """Train on normal uint8 (S, S, 3) RGB images (masked-token reconstruction)."""
        cfg = self.config
        net, tokens = seeded_net_and_inputs(
            data,
            cfg.image_size,
            cfg.batch_size,
            seed,
            self._new_net,
            _raw_tokens,
        )
        mae = net if isinstance(net, MaskedAutoencoder) else net.mae
        if isinstance(net, FeatureMAEGraph):
            mean = tokens.mean(dim=(0, 1), keepdim=True)
            std = tokens.std(dim=(0, 1), keepdim=True)
            net.feat_mean.copy_(mean)
            net.feat_scale.copy_(1.0 / std.clamp_min(1e-6))
            tokens = (tokens - mean) * net.feat_scale
        generator = seeded_generator(seed + 1)
        self.train_losses_ = train_epochs(
            mae,
            tokens,
            lambda batch: mae.train_loss(batch, generator),
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

    def input_preprocess(self) -> ImagePreprocess:
        """Pixels: x / 255 only; features: the backbone's declared normalisation."""
        if self.config.target == "pixels":
            return super().input_preprocess()
        from edgead.models.backbones import backbone_preprocess

        return backbone_preprocess(self.config.backbone)

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The ViT weights ("net.*"); features: plus the standardisation ("feat_*"), not the
        frozen backbone (rebuilt from the config)."""
        net = self._fitted_net()
        if isinstance(net, MaskedAutoencoder):
            return module_state("net.", net)
        arrays = module_state("net.", net.mae)
        arrays["feat_mean"] = net.feat_mean.numpy().copy()
        arrays["feat_scale"] = net.feat_scale.numpy().copy()
        return arrays

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Rebuild the network from the config (fixed masks included) and load its weights."""
        net = self._new_net()
        load_module_state("net.", net if isinstance(net, MaskedAutoencoder) else net.mae, arrays)
        if isinstance(net, FeatureMAEGraph):
            load_module_state("feat_", _Stats(net), arrays)
        net.eval()
        self._net = net


def _raw_tokens(net: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Training tokens of uint8 images: pixel patches, or unstandardised feature tokens."""
    if isinstance(net, FeatureMAEGraph):
        return net.embedder(batch)[0]
    return net.patches(batch)


class _Stats(nn.Module):
    """View of a FeatureMAEGraph's standardisation buffers as "mean" / "scale" (state I/O)."""

    def __init__(self, graph: FeatureMAEGraph) -> None:
        super().__init__()
        self.register_buffer("mean", graph.feat_mean)
        self.register_buffer("scale", graph.feat_scale)
