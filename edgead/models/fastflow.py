"""FastFlow (Yu et al., 2021): a 2-D normalizing flow over frozen backbone feature maps.

Per backbone stage i (channels c_i, stride r_i from `feature_info`): a non-affine-free LayerNorm
over (c_i, h_i, w_i) as in the paper's CNN variant, then `n_blocks` affine coupling blocks. Each
block permutes the channels (fixed, seeded), splits them in halves (a, b), and maps
b -> b * exp(s(a)) + t(a), where (s, t) come from a small subnet whose convs alternate 3x3 and
1x1 between blocks and s is soft-clamped to (-clamp, clamp) by clamp * tanh(s / clamp). Trained
by maximum likelihood (standard normal base) on the features of normal images.

Anomaly map: the negative log-likelihood per position and per channel,
(0.5 * sum_c z^2 - sum_c s) / c_i (constant 0.5*log(2*pi) dropped), bilinearly resized to the
finest grid and averaged over stages. Export: ("anomaly_map",) (B, h, w) with the "map" kind.
All ops (Gather for the permutation, Slice, Tanh, Exp, Conv, LayerNormalization, Resize) export
to ONNX opset 17 and OpenVINO.
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

from edgead.errors import ConfigError
from edgead.models._image_common import (
    BackboneFeatures,
    backbone_channels_strides,
    build_backbone,
    check_images,
    iter_batches,
    load_module_state,
    map_export_spec,
    maps_to_output,
    module_state,
    seeded_generator,
    train_epochs,
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


@dataclass(frozen=True, kw_only=True)
class FastFlowConfig:
    """FastFlow settings.

    image_size: square input side in px.
    backbone: registry name in `edgead.models.backbones`; pretrained: ImageNet weights.
    n_blocks: coupling blocks per stage; hidden_ratio: subnet width / input channels.
        The defaults (4 blocks, ratio 0.5, 20 epochs; the paper uses 8, 1.0, 500) are sized
        for a few CPU minutes on ~50 images at 256 px, not tuned on any test split.
    clamp: soft bound of the log-scales s.
    epochs, lr, weight_decay, batch_size: Adam training on cached backbone features.
    blur_sigma: Gaussian sigma (px) applied to the upsampled map.
    """

    image_size: int = 256
    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    n_blocks: int = 4
    hidden_ratio: float = 0.5
    clamp: float = 2.0
    epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 1e-5
    batch_size: int = 8
    blur_sigma: float = 4.0

    def validate(self) -> None:
        """Raise ConfigError on values that cannot work."""
        if self.image_size < 16 or self.n_blocks < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(
                "fastflow: image_size >= 16, n_blocks >= 1, epochs >= 1 and "
                "batch_size >= 1 are required"
            )
        if self.hidden_ratio <= 0 or self.clamp <= 0 or self.lr <= 0 or self.blur_sigma < 0:
            raise ConfigError("fastflow: hidden_ratio, clamp and lr must be > 0, blur_sigma >= 0")


class AffineCoupling(nn.Module):
    """One affine coupling block on (B, c, h, w) maps; returns (z, log-scale sum per position).

    Args:
        channels: c (>= 2).
        hidden: subnet width.
        kernel: 3 or 1 (subnet conv kernel size).
        clamp: soft bound of the log-scales.
        permutation: int64 (c,) channel order applied before splitting.
    """

    permutation: torch.Tensor  # buffer

    def __init__(
        self, channels: int, hidden: int, kernel: int, clamp: float, permutation: torch.Tensor
    ) -> None:
        super().__init__()
        self.split = channels // 2
        self.clamp = float(clamp)
        self.register_buffer("permutation", permutation.to(torch.int64))
        pad = kernel // 2
        self.subnet = nn.Sequential(
            nn.Conv2d(self.split, hidden, kernel, padding=pad),
            nn.ReLU(),
            nn.Conv2d(hidden, 2 * (channels - self.split), kernel, padding=pad),
        )
        # Start as the identity map: zero last layer -> s = t = 0.
        nn.init.zeros_(self.subnet[2].weight)
        nn.init.zeros_(self.subnet[2].bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z float32 (B, c, h, w), log|det| float32 (B, h, w) = sum_c s)."""
        x = torch.index_select(x, 1, self.permutation)
        x_a, x_b = x[:, : self.split], x[:, self.split :]
        s_raw, t = self.subnet(x_a).chunk(2, dim=1)
        s = self.clamp * torch.tanh(s_raw / self.clamp)
        z_b = x_b * torch.exp(s) + t
        return torch.cat([x_a, z_b], dim=1), s.sum(dim=1)


class StageFlow(nn.Module):
    """LayerNorm over (c, h, w) then `n_blocks` couplings; returns (z, log|det| (B, h, w))."""

    def __init__(
        self,
        channels: int,
        grid_hw: tuple[int, int],
        n_blocks: int,
        hidden: int,
        clamp: float,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm([channels, grid_hw[0], grid_hw[1]])
        self.blocks = nn.ModuleList(
            AffineCoupling(
                channels,
                hidden,
                3 if i % 2 == 0 else 1,
                clamp,
                torch.randperm(channels, generator=generator),
            )
            for i in range(n_blocks)
        )

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z (B, c, h, w), log|det| (B, h, w)) from features (B, c, h, w)."""
        z = self.norm(features)
        logdet = torch.zeros_like(z[:, 0])
        for block in self.blocks:
            z, block_logdet = block(z)
            logdet = logdet + block_logdet
        return z, logdet


def _nll_per_dim(z: torch.Tensor, logdet: torch.Tensor) -> torch.Tensor:
    """float32 (B, h, w) negative log-likelihood per channel, constant dropped."""
    return (0.5 * (z * z).sum(dim=1) - logdet) / z.shape[1]


class FastFlowHead(nn.Module):
    """The flows of all stages: feature maps -> (B, h, w) anomaly map on the finest grid."""

    def __init__(
        self, channels: list[int], grids: list[tuple[int, int]], cfg: FastFlowConfig, seed: int
    ) -> None:
        super().__init__()
        generator = seeded_generator(seed)
        self.flows = nn.ModuleList(
            StageFlow(
                c, g, cfg.n_blocks, max(1, int(round(c * cfg.hidden_ratio))), cfg.clamp, generator
            )
            for c, g in zip(channels, grids, strict=True)
        )
        self.grid_hw = (int(grids[0][0]), int(grids[0][1]))

    def loss(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Scalar: mean over images of the NLL per dimension, summed over stages."""
        total = features[0].new_zeros(())
        for flow, feats in zip(self.flows, features, strict=True):
            z, logdet = flow(feats)
            total = total + _nll_per_dim(z, logdet).mean()
        return total

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """float32 (B, h, w): per-stage NLL maps resized to the finest grid, averaged."""
        maps = []
        for flow, feats in zip(self.flows, features, strict=True):
            nll = _nll_per_dim(*flow(feats)).unsqueeze(1)
            if tuple(flow.norm.normalized_shape[1:]) != self.grid_hw:  # static: no trace branch
                nll = F.interpolate(nll, size=self.grid_hw, mode="bilinear", align_corners=False)
            maps.append(nll)
        return torch.cat(maps, dim=1).mean(dim=1)


class FastFlowGraph(nn.Module):
    """Export module: uint8 (B, S, S, 3) -> ("anomaly_map",) float32 (B, h, w) NLL map."""

    def __init__(self, features: BackboneFeatures, head: FastFlowHead) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor]:
        """(float32 (B, h, w) negative log-likelihood per channel,)."""
        return (self.head(self.features(images)),)


@register_detector("fastflow")
class FastFlow(BaseDetector):
    """FastFlow image detector (see module docstring)."""

    modality = "image"
    config_cls = FastFlowConfig

    def __init__(self, config: FastFlowConfig) -> None:
        super().__init__(config)
        backbone = build_backbone(config.backbone, config.pretrained)
        self.channels_, strides = backbone_channels_strides(backbone)
        self.grids_ = [(-(-config.image_size // r),) * 2 for r in strides]
        order = np.argsort(strides, kind="stable")  # finest grid first
        if order[0] != 0:
            raise ConfigError(
                f"fastflow expects the backbone's finest map first; got strides "
                f"{strides}; use another backbone"
            )
        self._features = BackboneFeatures(backbone)
        self._graph: FastFlowGraph | None = None
        self.train_losses_: list[float] = []

    @property
    def is_fitted(self) -> bool:
        return self._graph is not None

    def _fitted_graph(self) -> FastFlowGraph:
        return self._require_fitted(self._graph)

    def _new_head(self, seed: int) -> FastFlowHead:
        return FastFlowHead(self.channels_, self.grids_, self.config, seed)

    def fit(
        self,
        data: Sequence[np.ndarray] | np.ndarray,
        *,
        seed: int = 0,
        progress: Progress = no_progress,
    ) -> None:
        """Train the flows by maximum likelihood on the (cached) features of normal images."""
        cfg = self.config
        n_images = check_images(data, cfg.image_size)
        with torch.inference_mode():
            cached = [
                self._features(b)
                for b in iter_batches(data, cfg.batch_size, progress, "fastflow: features")
            ]
        stages = [torch.cat([c[i] for c in cached]).clone() for i in range(len(self.channels_))]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # subnet conv init; the global RNG is restored afterwards
            head = self._new_head(seed)
        self.train_losses_ = train_epochs(
            head,
            torch.arange(n_images),
            lambda idx: head.loss([stage[idx] for stage in stages]),
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            generator=seeded_generator(seed + 1),
            progress=progress,
            description="fastflow: epochs",
        )
        head.eval()
        self._graph = FastFlowGraph(self._features, head)

    def grid_maps(
        self, data: Sequence[np.ndarray] | np.ndarray, progress: Progress = no_progress
    ) -> np.ndarray:
        """float32 (N, h, w) NLL maps at the finest feature grid (the graph output)."""
        graph = self._fitted_graph()
        check_images(data, self.config.image_size)
        with torch.inference_mode():
            outputs = [
                graph(b)[0].numpy()
                for b in iter_batches(data, self.config.batch_size, progress, "fastflow: score")
            ]
        return np.concatenate(outputs).astype(np.float32)

    def score(
        self, data: Sequence[np.ndarray] | np.ndarray, progress: Progress = no_progress
    ) -> ScoreOutput:
        """Scores (N,) = max of the blurred NLL map; maps (N, S, S)."""
        return maps_to_output(
            self.grid_maps(data, progress), self.config.image_size, self.config.blur_sigma
        )

    def state_arrays(self) -> dict[str, np.ndarray]:
        return module_state("flow.", self._fitted_graph().head)

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        head = self._new_head(0)
        load_module_state("flow.", head, arrays)  # permutations are buffers: restored too
        head.eval()
        self._graph = FastFlowGraph(self._features, head)

    def export_spec(self) -> ExportSpec:
        graph = self._fitted_graph()
        return map_export_spec(graph, self.config.image_size, self.config.blur_sigma)

    def describe(self) -> dict[str, Any]:
        if not self.is_fitted:
            return {}
        head = self._fitted_graph().head
        return {
            "grids": [list(g) for g in self.grids_],
            "flow_parameters": int(sum(p.numel() for p in head.parameters())),
            "final_train_loss": self.train_losses_[-1] if self.train_losses_ else None,
        }
