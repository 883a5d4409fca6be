"""CSI diagnostics (torch only, no export): which representation the CSI score should use.

For one data set of `image_methods.py` (same loader, size and split), fits CSI with the given
config and prints the image AUROC of the CSI score (ensemble over the 4 rotations of max cosine
to the training images x norm, lambda_k from the training images) computed on:
- "projection": the projection head's z (the paper's choice for a network trained from scratch),
- "features": the pooled last backbone map f (stride 16 for EfficientNet-Lite0) of the same net,
- with `--pooling`, also on the FROZEN pretrained backbone: average / max pooled stride-8 and
  stride-16 maps and their concatenation.
`{"epochs": 1, "lr": 1e-12, "train_fraction": 0.0}` as config gives the untrained network
(random heads, pretrained backbone).

    PYTHONPATH=. .venv/bin/python benchmarks/csi_layers.py --dataset mpdd \
        --config '{"epochs": 1, "lr": 1e-12, "train_fraction": 0.0}' --pooling
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from image_methods import load_dataset  # noqa: E402


def csi_auroc(labels: np.ndarray, train: np.ndarray, test: np.ndarray) -> float:
    """Image AUROC of the CSI score from per-rotation vectors train (N, 4, D), test (M, 4, D)."""
    from edgead.metrics import image_metrics

    score = np.zeros(len(test))
    for k in range(train.shape[1]):
        norm_tr = np.linalg.norm(train[:, k], axis=1)
        unit_tr = train[:, k] / norm_tr[:, None]
        cos = unit_tr @ unit_tr.T
        np.fill_diagonal(cos, -np.inf)  # leave-one-out, as CSI._set_bank
        lam = 1.0 / np.mean(cos.max(axis=1) * norm_tr)
        norm_te = np.linalg.norm(test[:, k], axis=1)
        score -= lam * ((test[:, k] / norm_te[:, None]) @ unit_tr.T).max(axis=1) * norm_te
    return float(image_metrics(labels, score)["auroc"])


def rotated_vectors(images: np.ndarray, fn: object) -> np.ndarray:
    """float64 (N, 4, D): fn(normalised rotated batch) for the 4 rotations of uint8 images."""
    from edgead.models._image_common import iter_batches

    out = []
    with torch.inference_mode():
        for batch in iter_batches(images, 16):
            out.append(torch.stack([fn(batch, k) for k in range(4)], dim=1))
    return torch.cat(out).numpy().astype(np.float64)


def main() -> None:
    """Print one JSON line of AUROCs (see the module docstring)."""
    from edgead.models._image_common import UInt8Normalize, build_backbone
    from edgead.models.base import create_detector
    from edgead.models.csi import rotate90

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, choices=("mpdd", "elpv"))
    parser.add_argument("--config", default="{}", help="CSI config overrides (JSON)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--pooling", action="store_true", help="also frozen pooled variants")
    args = parser.parse_args()
    torch.set_num_threads(1)
    split = argparse.Namespace(seed=0, elpv_train_cap=150, elpv_test_cap=150)
    data = load_dataset(args.dataset, args.image_size, split)
    labels = data["labels"]
    cfg = {"image_size": args.image_size, **json.loads(args.config)}
    det = create_detector("csi", cfg)
    start = time.perf_counter()
    det.fit(data["train"], seed=0)
    result = {"dataset": args.dataset, "config": cfg, "fit_s": time.perf_counter() - start}
    net = det._net  # noqa: SLF001 - diagnostic access to the fitted network

    def pooled(batch: torch.Tensor, k: int) -> torch.Tensor:
        return net.features(rotate90(net.normalize(batch), k))

    def projected(batch: torch.Tensor, k: int) -> torch.Tensor:
        return net.proj(pooled(batch, k))

    for name, fn in (("features", pooled), ("projection", projected)):
        train, test = rotated_vectors(data["train"], fn), rotated_vectors(data["test"], fn)
        result[name] = csi_auroc(labels, train, test)
    if args.pooling:
        backbone = build_backbone("efficientnet_lite0", True)
        norm = UInt8Normalize(backbone.mean, backbone.std)
        variants = {
            "frozen_avg_s8": lambda m: m[0].mean(dim=(2, 3)),
            "frozen_avg_s16": lambda m: m[1].mean(dim=(2, 3)),
            "frozen_max_s8": lambda m: m[0].amax(dim=(2, 3)),
            "frozen_max_s16": lambda m: m[1].amax(dim=(2, 3)),
            "frozen_avg_s8+s16": lambda m: torch.cat([m[0].mean((2, 3)), m[1].mean((2, 3))], 1),
        }
        for name, pool in variants.items():

            def frozen(batch: torch.Tensor, k: int, pool: object = pool) -> torch.Tensor:
                return pool(backbone(rotate90(norm(batch), k)))

            train = rotated_vectors(data["train"], frozen)
            result[name] = csi_auroc(labels, train, rotated_vectors(data["test"], frozen))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
