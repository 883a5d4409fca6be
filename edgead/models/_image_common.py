"""Helpers shared by the image detectors (PaDiM, FastFlow, conv AE/VAE, image Deep SVDD).

- `UInt8Normalize`: the first layer of every exported image graph; uint8 (B, S, S, 3) RGB NHWC in,
  normalised float32 (B, 3, S, S) out, so preprocessing travels inside the graph.
- `build_backbone`: a frozen feature extractor from `edgead.models.backbones`, built
  deterministically (a seeded init when `pretrained=False`, for tests).
- `check_images` / `iter_batches` / `map_batches`: input validation and batching of uint8 image
  sequences (lazily loaded images are read one batch ahead by a small thread pool, or by the
  worker threads that also run the model).
- `maps_to_output`: grid maps -> `ScoreOutput` with the same post-processing as the runtime.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from edgead.errors import DataError
from edgead.models.base import (
    BaseDetector,
    ExportSpec,
    ImagePreprocess,
    Progress,
    ScoreOutput,
    no_progress,
)
from edgead.ops.scoring import parse_postprocess, score_graph_output, score_map_output

logger = logging.getLogger(__name__)

#: Seed used to initialise a backbone built with `pretrained=False` (tests), so that a detector
#: rebuilt from a run directory gets the very same random weights.
_RANDOM_BACKBONE_SEED = 0
#: threads that read (decode + resize) lazily loaded images one batch ahead of the model; OpenCV's
#: decoders and Pillow's resize release the GIL, so reading overlaps the forward pass.
LOAD_THREADS = 2


class UInt8Normalize(nn.Module):
    """uint8 (B, S, S, 3) RGB NHWC -> float32 (B, 3, S, S), `(x / 255 - mean) / std`.

    Args:
        mean: per-channel mean on 0..1 RGB (3 floats).
        std: per-channel std on 0..1 RGB (3 floats).
    """

    scale: torch.Tensor  # buffer
    shift: torch.Tensor  # buffer

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.tensor([float(m) for m in mean], dtype=torch.float32).view(1, 3, 1, 1)
        std_t = torch.tensor([float(s) for s in std], dtype=torch.float32).view(1, 3, 1, 1)
        # Fold 1/255 and the std into one scale: x * scale + shift.
        self.register_buffer("scale", 1.0 / (255.0 * std_t), persistent=False)
        self.register_buffer("shift", -mean_t / std_t, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """float32 (B, 3, S, S) normalised images from uint8 (B, S, S, 3)."""
        x = images.to(torch.float32).permute(0, 3, 1, 2)
        return x * self.scale + self.shift


def build_backbone(name: str, pretrained: bool) -> nn.Module:
    """A frozen backbone (eval mode, no grads) from `edgead.models.backbones.create_backbone`.

    With `pretrained=False` the random init is seeded, so two calls give identical weights
    (a run directory does not store backbone weights; they are rebuilt from the config).
    """
    from edgead.models.backbones import create_backbone

    if pretrained:
        return create_backbone(name, pretrained=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_RANDOM_BACKBONE_SEED)
        return create_backbone(name, pretrained=False)


class BackboneFeatures(nn.Module):
    """uint8 (B, S, S, 3) RGB -> the backbone's feature maps, normalising inside the graph.

    forward returns the backbone's list of float32 maps, (B, c_i, S / r_i, S / r_i) for each
    stage i, with c_i / r_i from `backbone.feature_info`.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.normalize = UInt8Normalize(backbone.mean, backbone.std)
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """List of float32 feature maps from uint8 (B, S, S, 3) RGB images."""
        return list(self.backbone(self.normalize(images)))


def backbone_channels_strides(backbone: nn.Module) -> tuple[list[int], list[int]]:
    """([channels per stage], [stride per stage in px]) read from `backbone.feature_info`."""
    info = backbone.feature_info
    return [int(c) for c in info.channels()], [int(r) for r in info.reduction()]


def feature_grid(image_size: int, stride: int) -> tuple[int, int]:
    """(h, w) of a feature map of stride `stride` px for a square input of `image_size` px."""
    side = -(-int(image_size) // int(stride))  # ceil: conv nets pad odd sizes up
    return side, side


def check_images(images: Sequence[np.ndarray] | np.ndarray, image_size: int) -> int:
    """Number of images after checking each is uint8 (S, S, 3) with S = `image_size`.

    Raises:
        DataError: empty input, wrong dtype or wrong shape (message says how to fix it).
    """
    n_images = len(images)
    if n_images == 0:
        raise DataError("got no images; pass a non-empty sequence of uint8 (S, S, 3) RGB arrays")
    expected = (image_size, image_size, 3)
    for i in (0, n_images - 1):
        image = np.asarray(images[i])
        if image.dtype != np.uint8 or image.shape != expected:
            raise DataError(
                f"image {i} is {image.dtype} {image.shape}; expected uint8 {expected} RGB. Resize "
                f"with edgead.ops.image.resize_frame(img, ({image_size}, {image_size}))"
                " or set image_size in the detector config"
            )
    return n_images


def iter_batches(
    images: Sequence[np.ndarray] | np.ndarray,
    batch_size: int,
    progress: Progress = no_progress,
    description: str = "images",
    start: int = 0,
) -> Iterator[torch.Tensor]:
    """Yield uint8 (b, S, S, 3) tensors of at most `batch_size` images of `images[start:]`,
    reporting progress (counted from `start`).

    Images that are not already one numpy array (a lazily loaded Sequence: each access decodes
    a file) are read by `LOAD_THREADS` threads, the next batch while the caller works on this
    one; at most two batches are in memory. A loader's exception is raised here, in order."""
    n_images = len(images)
    starts = range(start, n_images, batch_size)
    if isinstance(images, np.ndarray):
        for first in starts:
            stop = min(first + batch_size, n_images)
            yield torch.from_numpy(np.ascontiguousarray(images[first:stop], dtype=np.uint8))
            progress(stop, n_images, description)
        return

    def load(index: int) -> np.ndarray:
        return np.asarray(images[index], dtype=np.uint8)

    with ThreadPoolExecutor(max_workers=LOAD_THREADS, thread_name_prefix="edgead-load") as pool:

        def submit(first: int) -> list[Future[np.ndarray]]:
            return [pool.submit(load, i) for i in range(first, min(first + batch_size, n_images))]

        pending = submit(start)
        for first in starts:
            current, pending = pending, submit(first + batch_size)
            yield torch.from_numpy(np.stack([future.result() for future in current]))
            progress(min(first + batch_size, n_images), n_images, description)


def load_batch(images: Sequence[np.ndarray] | np.ndarray, first: int, stop: int) -> np.ndarray:
    """uint8 (stop - first, S, S, 3): images first..stop-1 read (a lazy Sequence decodes each)."""
    return np.stack([np.asarray(images[i], dtype=np.uint8) for i in range(first, stop)])


def map_batches(
    fn: Callable[[np.ndarray], np.ndarray],
    images: Sequence[np.ndarray] | np.ndarray,
    batch_size: int,
    workers: int,
    progress: Progress = no_progress,
    description: str = "images",
    start: int = 0,
) -> list[np.ndarray]:
    """[fn(uint8 (b, S, S, 3) batch) for consecutive batches of at most `batch_size` images of
    `images[start:]`], in order, computed by `workers` threads that each read (decode + resize)
    and run their own batches (`images` is indexed, never sliced: a lazy Sequence stays lazy).
    For a `fn` that releases the GIL and runs on its calling thread (a single-threaded ONNX
    Runtime session): reading and the model then share the cores with no idle time. The first
    failure is raised here, after the batches not yet started are cancelled."""
    n_images = len(images)

    def task(first: int) -> np.ndarray:
        return fn(load_batch(images, first, min(first + batch_size, n_images)))

    results: list[np.ndarray] = []
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="edgead-map") as pool:
        starts = range(start, n_images, batch_size)
        futures = [pool.submit(task, first) for first in starts]
        try:
            for first, future in zip(starts, futures, strict=True):
                results.append(future.result())
                progress(min(first + batch_size, n_images), n_images, description)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return results


def maps_to_output(
    grid_maps: np.ndarray, image_size: int, sigma: float, scores: np.ndarray | None = None
) -> ScoreOutput:
    """`ScoreOutput` from grid maps, post-processed by the runtime's own scorer
    (`edgead.ops.scoring`: kind "map" without `scores`, kind "graph" with them).

    Args:
        grid_maps: float32 (N, h, w) raw map values at the model's grid.
        image_size: S px; maps are upsampled (bilinear) to (S, S), then blurred.
        sigma: Gaussian sigma in px (0 = no blur).
        scores: float32 (N,) image scores from the graph ("graph" kind); None means the max of
            each post-processed map ("map" kind, score "map_max").

    Returns:
        ScoreOutput with scores (N,) and anomaly_maps (N, S, S), both float32.
    """
    size_hw = (image_size, image_size)
    if scores is None:
        post = parse_postprocess({"kind": "map", "blur_sigma": float(sigma)})
        scored = score_map_output(grid_maps, post, size_hw)
    else:
        post = parse_postprocess({"kind": "graph", "blur_sigma": float(sigma)})
        scored = score_graph_output(scores, grid_maps, post, size_hw)
    return ScoreOutput(scores=scored.raw, anomaly_maps=scored.maps)


def map_export_spec(module: nn.Module, image_size: int, blur_sigma: float) -> ExportSpec:
    """ExportSpec of a graph uint8 (B, S, S, 3) -> ("anomaly_map",) float32 (B, h, w) whose
    runtime post-processing is upsample + blur (sigma px) and score = max of the map."""
    return ExportSpec(
        module=module,
        example_input=np.zeros((1, image_size, image_size, 3), dtype=np.uint8),
        input_name="images",
        output_names=("anomaly_map",),
        postprocess={"kind": "map", "blur_sigma": float(blur_sigma), "score": "map_max"},
    )


def module_state(prefix: str, module: nn.Module) -> dict[str, np.ndarray]:
    """`{prefix + key: array}` from a module's state_dict (float/int arrays, copied to CPU)."""
    return {f"{prefix}{k}": v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def load_module_state(prefix: str, module: nn.Module, arrays: dict[str, np.ndarray]) -> None:
    """Load the arrays named `prefix + key` into `module` (strict: every key must be there).

    Raises:
        DataError: an array is missing or has the wrong shape (the run was made by another config).
    """
    state: dict[str, Any] = {}
    for key, value in module.state_dict().items():
        name = f"{prefix}{key}"
        if name not in arrays:
            raise DataError(
                f"state array '{name}' is missing; the run does not match this detector"
            )
        array = np.asarray(arrays[name])
        if tuple(array.shape) != tuple(value.shape):
            raise DataError(
                f"state array '{name}' has shape {array.shape}, expected "
                f"{tuple(value.shape)}; the run was made with another config"
            )
        state[key] = torch.from_numpy(array.copy())
    module.load_state_dict(state)


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU torch.Generator seeded with `seed` (pass it to shuffles/initialisers)."""
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return generator


def train_epochs(
    module: nn.Module,
    inputs: torch.Tensor,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    generator: torch.Generator,
    progress: Progress = no_progress,
    description: str = "epochs",
) -> list[float]:
    """Mean loss per epoch after training `module` with Adam on shuffled mini-batches.

    Args:
        module: put in train mode here; the caller switches it to eval afterwards.
        inputs: float32 (N, ...) training tensors, indexed along dim 0.
        batch_loss: maps a batch (b, ...) to a scalar loss.
        generator: seeded; drives the shuffling.

    Raises:
        DataError: the loss became NaN/inf (the message names the epoch; lower lr).
    """
    optimizer = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    n_items = int(inputs.shape[0])
    module.train()
    losses: list[float] = []
    start = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(n_items, generator=generator)
        total = 0.0
        for lo in range(0, n_items, batch_size):
            idx = order[lo : lo + batch_size]
            loss = batch_loss(inputs[idx])
            if not torch.isfinite(loss):
                raise DataError(
                    f"{description}: loss became {loss.item()} at epoch {epoch}; "
                    "lower lr or check the training images"
                )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.item()) * len(idx)
        losses.append(total / n_items)
        progress(epoch + 1, epochs, description)
    logger.info(
        "%s: %d epochs in %.1f s, loss %.4g -> %.4g",
        description,
        epochs,
        time.perf_counter() - start,
        losses[0],
        losses[-1],
    )
    return losses


NetT = TypeVar("NetT", bound=nn.Module)


def seeded_net_and_inputs(
    data: Sequence[np.ndarray] | np.ndarray,
    image_size: int,
    batch_size: int,
    seed: int,
    build: Callable[[], NetT],
    prepare: Callable[[NetT, torch.Tensor], torch.Tensor],
) -> tuple[NetT, torch.Tensor]:
    """The preamble of every fit that trains a net: (net, prepared inputs).

    Checks the uint8 (S, S, 3) images, builds the net with `seed` (only its initialisation
    draws from it), and runs `prepare(net, batch)` once over every image without gradients.
    The prepared tensor is a normal one (inference tensors cannot enter autograd).

    Raises:
        DataError: as `check_images`.
    """
    check_images(data, image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build()
    with torch.inference_mode():
        prepared = torch.cat([prepare(net, b) for b in iter_batches(data, batch_size)])
    return net, prepared.clone()


class ScratchNetDetector(BaseDetector):
    """Shared state/export/describe for image detectors whose whole model is one network trained
    from scratch (conv AE/VAE, image Deep SVDD): the net's forward is the exported graph, taking
    uint8 (B, S, S, 3) RGB and returning ("score", "anomaly_map")."""

    modality = "image"

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._net: nn.Module | None = None
        self.train_losses_: list[float] = []

    @property
    def is_fitted(self) -> bool:
        return self._net is not None

    def _fitted_net(self) -> Any:
        return self._require_fitted(self._net)

    def state_arrays(self) -> dict[str, np.ndarray]:
        return module_state("net.", self._fitted_net())

    def score(
        self, data: Sequence[np.ndarray] | np.ndarray, progress: Progress = no_progress
    ) -> ScoreOutput:
        """Scores (N,) and maps (N, S, S) from the net's forward (per-image score, per-cell
        map), the maps upsampled and blurred as the runtime does (`maps_to_output`)."""
        net = self._fitted_net()
        check_images(data, self.config.image_size)
        scores, maps = [], []
        with torch.inference_mode():
            for batch in iter_batches(
                data, self.config.batch_size, progress, f"{self.name}: score"
            ):
                batch_scores, batch_maps = net(batch)
                scores.append(batch_scores.numpy())
                maps.append(batch_maps.numpy())
        return maps_to_output(
            np.concatenate(maps),
            self.config.image_size,
            self.config.blur_sigma,
            scores=np.concatenate(scores),
        )

    def input_preprocess(self) -> ImagePreprocess:
        """The nets scale uint8 RGB to 0..1 (x / 255) and normalise nothing else."""
        return ImagePreprocess(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))

    def export_spec(self) -> ExportSpec:
        size = self.config.image_size
        return ExportSpec(
            module=self._fitted_net(),
            example_input=np.zeros((1, size, size, 3), dtype=np.uint8),
            input_name="images",
            output_names=("score", "anomaly_map"),
            postprocess={"kind": "graph", "blur_sigma": float(self.config.blur_sigma)},
        )

    def describe(self) -> dict[str, Any]:
        if not self.is_fitted:
            return {}
        return {
            "parameters": int(sum(p.numel() for p in self._fitted_net().parameters())),
            "final_train_loss": self.train_losses_[-1] if self.train_losses_ else None,
        }
