"""CSI: contrasting shifted instances (Tack et al., NeurIPS 2020) for images (registry "csi").

Network: the pretrained backbone (normalisation in the graph) -> global average pool of its last
feature map f (B, C) -> projection head z = MLP(f) (B, proj_dim), and a rotation head (4 logits).
Training (normal images only) fine-tunes the last `train_fraction` of the backbone's parameter
tensors that the forward pass uses (default 1.0: all of them, as the paper trains the whole
network; BatchNorm statistics stay frozen) and both heads on:
- SimCLR's contrastive loss where the four rotations (0, 90, 180, 270 deg) of every image are
  DIFFERENT instances (the shifted copies are negatives), two augmented views each
  (flip, translation, brightness), temperature `temperature`;
- plus `rot_weight` x cross-entropy of the rotation head.

Score (the paper's CSI ensemble, sign flipped so that higher = more anomalous):
    score(x) = - sum_k lambda_k * max_m cos(v(T_k x), v(T_k x_m)) * ||v(T_k x)||,
with v the representation named by `score_layer`: "features" (default) the fine-tuned pooled
backbone features f, "projection" the head's z as in the paper's from-scratch ResNet. Starting
from a pretrained backbone with a small training set, z is a freshly initialised head trained on
a few hundred images and carries little of the pretrained knowledge, while f keeps it and is
shaped by the same contrastive + rotation objective (measured in docs/image_methods.md: MPDD
0.69 with z vs 0.98 with f on the untrained network);
T_k = rotation by k * 90 deg, x_m the training images, lambda_k = 1 / the mean of the same term
over the training images (leave-one-out). Export: the graph outputs "embedding" (B, 4, 4 D)
(the unit v of rotation k placed in block k, D = C or proj_dim, zeros elsewhere, so one exact
cosine search over a bank of all rotations' training vectors only matches the same rotation:
for unit vectors cos = 1 - L2^2 / 2) and "norm" (B, 4); the runtime searches the bundle's flat index
(`edgead.ops.csi`). No anomaly map (image-level method).
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
    UInt8Normalize,
    build_backbone,
    check_images,
    iter_batches,
    load_module_state,
    module_state,
    seeded_generator,
    seeded_net_and_inputs,
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
from edgead.ops.csi import ROTATIONS, csi_combine

logger = logging.getLogger(__name__)

#: representations the score can use: pooled backbone features or the projection head's output.
SCORE_LAYERS = ("features", "projection")


@dataclass(frozen=True, kw_only=True)
class CSIConfig:
    """CSI settings.

    image_size: square input side in px. backbone / pretrained: the feature extractor.
    train_fraction: share of the backbone's used parameter tensors (the last ones) fine-tuned.
    score_layer: "features" (pooled backbone features f) or "projection" (z) for the score.
    proj_dim: projection width; temperature: contrastive temperature; rot_weight: weight of
    the rotation loss. epochs, lr, weight_decay, batch_size: Adam training budget (a batch of B
    images becomes 2 views x 4 rotations x B instances).

    train_fraction=1.0 was chosen among 0.3 / 0.6 / 1.0 on ELPV cells that the image-methods
    benchmark does not use (benchmarks/csi_select.py; docs/image_methods.md).
    """

    image_size: int = 256
    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    train_fraction: float = 1.0
    proj_dim: int = 128
    temperature: float = 0.5
    rot_weight: float = 1.0
    score_layer: str = "features"
    epochs: int = 10
    lr: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 8

    def validate(self) -> None:
        """Raise ConfigError on values that cannot work."""
        ok = (
            0.0 <= self.train_fraction <= 1.0
            and self.proj_dim >= 1
            and self.temperature > 0
            and self.rot_weight >= 0
            and self.epochs >= 1
            and self.batch_size >= 2
            and self.lr > 0
            and self.weight_decay >= 0
            and self.score_layer in SCORE_LAYERS
        )
        if not ok:
            raise ConfigError(
                "csi: need 0 <= train_fraction <= 1, proj_dim >= 1, temperature > 0, "
                f"rot_weight >= 0, epochs >= 1, batch_size >= 2, lr > 0, score_layer in "
                f"{SCORE_LAYERS}; got {self}"
            )


def rotate90(x: torch.Tensor, k: int) -> torch.Tensor:
    """x (B, C, S, S) rotated by k * 90 degrees (transpose + reversed Gather: exports to ONNX)."""
    rev = torch.arange(x.shape[-1] - 1, -1, -1, device=x.device)
    for _ in range(k % 4):
        x = x.transpose(2, 3).index_select(3, rev)
    return x


class CSINet(nn.Module):
    """uint8 (B, S, S, 3) -> ("embedding" (B, 4, 4 D) block-placed unit v, "norm" (B, 4));
    v = pooled features (D = C) or projection (D = proj_dim), per `score_layer`."""

    def __init__(self, backbone: nn.Module, cfg: CSIConfig) -> None:
        super().__init__()
        self.normalize = UInt8Normalize(backbone.mean, backbone.std)
        self.backbone = backbone
        channels = int(backbone.feature_info.channels()[-1])
        self.proj = nn.Sequential(
            nn.Linear(channels, channels), nn.ReLU(), nn.Linear(channels, cfg.proj_dim)
        )
        self.rot_head = nn.Linear(channels, ROTATIONS)
        self.score_features = cfg.score_layer == "features"
        self.out_dim = channels if self.score_features else cfg.proj_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled last backbone map (B, C) of normalised images (B, 3, S, S)."""
        return self.backbone(x)[-1].mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(embedding (B, 4, 4 D), norm (B, 4)) for the four rotations of uint8 images."""
        x = self.normalize(images)
        blocks, norms = [], []
        for k in range(ROTATIONS):
            f = self.features(rotate90(x, k))
            z = f if self.score_features else self.proj(f)
            norm = torch.sqrt((z * z).sum(dim=1, keepdim=True))
            unit = z / norm.clamp_min(1e-12)
            pad = [torch.zeros_like(unit)] * ROTATIONS
            pad[k] = unit
            blocks.append(torch.cat(pad, dim=1))
            norms.append(norm)
        return torch.stack(blocks, dim=1), torch.cat(norms, dim=1)


def _trainable(net: CSINet, fraction: float) -> list[str]:
    """Names of the last `fraction` of backbone parameter tensors the forward pass uses."""
    for p in net.backbone.parameters():
        p.requires_grad_(True)
    net.features(torch.zeros(1, 3, 64, 64)).sum().backward()  # a probe: which tensors are used
    used = [n for n, p in net.backbone.named_parameters() if p.grad is not None]
    keep = set(used[len(used) - int(round(fraction * len(used))) :]) if fraction > 0 else set()
    for name, p in net.backbone.named_parameters():
        p.grad = None
        p.requires_grad_(name in keep)
    return sorted(keep)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random view of normalised images (B, 3, S, S): flip, shift up to S/8, brightness."""
    b, _, s, _ = x.shape
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    shift = int(torch.randint(-(s // 8), s // 8 + 1, (1,), generator=gen))
    x = torch.roll(x, shifts=(shift, -shift), dims=(2, 3))
    return x + 0.2 * (torch.rand(b, 1, 1, 1, generator=gen) - 0.5)


def _contrastive(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR NT-Xent of two views (N, D) of N instances (every other instance a negative)."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    sim = z @ z.t() / temperature
    sim = sim - torch.eye(2 * n) * 1e9  # no self-pairs
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


@register_detector("csi")
class CSI(BaseDetector):
    """Contrasting shifted instances; score = - CSI ensemble of cos x norm over rotations."""

    modality = "image"
    config_cls = CSIConfig

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._net: CSINet | None = None
        self._bank: np.ndarray | None = None  # (4 N, 4 D) block-placed unit training vectors
        self._weights: np.ndarray | None = None  # lambda_k (4,)
        self.train_losses_: list[float] = []

    @property
    def is_fitted(self) -> bool:
        """True once fit ran or state was loaded."""
        return self._net is not None and self._bank is not None

    def _new_net(self) -> CSINet:
        cfg = self.config
        return CSINet(build_backbone(cfg.backbone, cfg.pretrained), cfg)

    def fit(
        self,
        data: Sequence[np.ndarray] | np.ndarray,
        *,
        seed: int = 0,
        progress: Progress = no_progress,
    ) -> None:
        """Fine-tune on normal uint8 (S, S, 3) RGB images, then store their features."""
        cfg = self.config
        net, images = seeded_net_and_inputs(
            data,
            cfg.image_size,
            cfg.batch_size,
            seed,
            self._new_net,
            lambda net, batch: net.normalize(batch),
        )
        trained = _trainable(net, cfg.train_fraction)
        logger.info("csi: fine-tuning %d backbone tensors and the heads", len(trained))
        gen = seeded_generator(seed + 1)

        def batch_loss(x: torch.Tensor) -> torch.Tensor:
            shifted = torch.cat([rotate90(x, k) for k in range(ROTATIONS)])
            labels = torch.arange(ROTATIONS).repeat_interleave(x.shape[0])
            f1 = net.features(_augment(shifted, gen))
            f2 = net.features(_augment(shifted, gen))
            loss = _contrastive(net.proj(f1), net.proj(f2), cfg.temperature)
            rot = F.cross_entropy(net.rot_head(torch.cat([f1, f2])), labels.repeat(2))
            return loss + cfg.rot_weight * rot

        net.backbone.eval()  # BatchNorm statistics stay those of the pretrained backbone
        self.train_losses_ = train_epochs(
            _FrozenBN(net),
            images,
            batch_loss,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            generator=gen,
            progress=progress,
            description="csi: epochs",
        )
        net.eval()
        self._net = net
        self._set_bank(data)

    def _embed(self, data: Sequence[np.ndarray] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(embedding (N, 4, 4 D), norm (N, 4)) float32 from the graph module."""
        net = self._require_fitted(self._net)
        embs, norms = [], []
        with torch.inference_mode():
            for batch in iter_batches(data, self.config.batch_size):
                emb, norm = net(batch)
                embs.append(emb.numpy())
                norms.append(norm.numpy())
        return np.concatenate(embs), np.concatenate(norms)

    def _set_bank(self, data: Sequence[np.ndarray] | np.ndarray) -> None:
        """Store the training vectors and lambda_k (leave-one-out mean of cos x norm)."""
        emb, norm = self._embed(data)
        n = emb.shape[0]
        self._bank = np.ascontiguousarray(emb.transpose(1, 0, 2).reshape(ROTATIONS * n, -1))
        per_rot = []
        for k in range(ROTATIONS):
            cos = emb[:, k] @ emb[:, k].T
            np.fill_diagonal(cos, -np.inf)
            best = cos.max(axis=1) if n > 1 else np.ones(n, dtype=np.float32)
            per_rot.append(float(np.mean(best * norm[:, k])))
        self._weights = 1.0 / np.maximum(np.asarray(per_rot, dtype=np.float64), 1e-12)

    def score(
        self, data: Sequence[np.ndarray] | np.ndarray, progress: Progress = no_progress
    ) -> ScoreOutput:
        """Scores (N,), higher = more anomalous; no maps (anomaly_maps None)."""
        check_images(data, self.config.image_size)
        bank = self._require_fitted(self._bank)
        emb, norm = self._embed(data)
        n = emb.shape[0]
        cos = emb.reshape(n * ROTATIONS, -1) @ bank.T  # exact, float32
        best = cos.max(axis=1).reshape(n, ROTATIONS)
        weights = self._require_fitted(self._weights)
        return ScoreOutput(scores=csi_combine(best, norm, weights).astype(np.float32))

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Network weights ("net.*"), the bank and lambda_k."""
        arrays = module_state("net.", self._require_fitted(self._net))
        arrays["bank"] = self._require_fitted(self._bank)
        arrays["weights"] = self._require_fitted(self._weights)
        return arrays

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Rebuild the network from the config and load weights, bank and lambda_k."""
        net = self._new_net()
        load_module_state("net.", net, arrays)
        net.eval()
        self._net = net
        self._bank = np.ascontiguousarray(arrays["bank"], dtype=np.float32)
        self._weights = np.asarray(arrays["weights"], dtype=np.float64)

    def export_spec(self) -> ExportSpec:
        """Graph: uint8 images -> ("embedding", "norm"); post-processing "csi_nn_index"."""
        size = self.config.image_size
        return ExportSpec(
            module=self._require_fitted(self._net),
            example_input=np.zeros((1, size, size, 3), dtype=np.uint8),
            input_name="images",
            output_names=("embedding", "norm"),
            postprocess={
                "kind": "csi_nn_index",
                "k": 1,
                "weights": [float(w) for w in self._require_fitted(self._weights)],
            },
            arrays={"memory_bank": self._require_fitted(self._bank)},
        )

    def describe(self) -> dict[str, Any]:
        """Bank size, lambda_k and the last training loss."""
        if not self.is_fitted:
            return {}
        return {
            "bank_vectors": int(self._require_fitted(self._bank).shape[0]),
            "weights": [float(w) for w in self._require_fitted(self._weights)],
            "final_train_loss": self.train_losses_[-1] if self.train_losses_ else None,
        }


class _FrozenBN(nn.Module):
    """Wraps the net for `train_epochs`, which calls .train(): the backbone stays in eval mode."""

    def __init__(self, net: CSINet) -> None:
        super().__init__()
        self.net = net

    def train(self, mode: bool = True) -> _FrozenBN:
        """Heads follow `mode`; the backbone (BatchNorm statistics) stays in eval mode."""
        super().train(mode)
        self.net.backbone.eval()
        return self
