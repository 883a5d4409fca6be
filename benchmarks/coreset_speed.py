"""Coreset selection speed: greedy k-center on >= 600k patch vectors at a 1 % ratio.

    .venv/bin/python benchmarks/coreset_speed.py                       # real MPDD features
    .venv/bin/python benchmarks/coreset_speed.py --source synthetic --n-vectors 600000

--source mpdd (default): PatchCore patch embeddings (efficientnet_lite0, D = 152) of all 161
MPDD metal_plate images at 512 px (64 x 64 patches each: 659,456 vectors); extraction is not
timed; --cache FILE.npy keeps them for reruns. --source synthetic: a seeded Gaussian mixture
with the same D (no data needed). The timed part is `edgead.models.coreset.greedy_coreset`
(projection, selection) after one untimed warm-up on a small slice; the script records the
load average before and after, since the machine is shared.

Prints one line per repeat and writes benchmarks/results/coreset_speed-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
OUT_DIR = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def mpdd_features(image_size: int, log: logging.Logger) -> np.ndarray:
    """float32 (N, D) PatchCore embeddings of every MPDD metal_plate image (train + test)."""
    from edgead.data.datasets import load_image_dataset
    from edgead.models.base import create_detector

    env = os.environ.get("EDGEAD_DATA")
    root = (Path(env) if env else REPO.parent / "shared" / "datasets") / "mpdd_metal_plate"
    dataset = load_image_dataset(root, image_size)
    det = create_detector("patchcore", {"image_size": image_size})
    t0 = time.perf_counter()
    parts = [det.embed(dataset.train_images()), det.embed(dataset.test_set().images)]
    features = np.concatenate(parts).reshape(-1, parts[0].shape[-1])
    log.info(
        "extracted %s features in %.1f s (not part of the timing)",
        features.shape,
        time.perf_counter() - t0,
    )
    return features


def synthetic_features(n_vectors: int, dim: int, seed: int) -> np.ndarray:
    """float32 (N, D): a seeded mixture of 200 Gaussians on a 32-dim subspace, ReLU'd."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(0, 3, size=(200, 32))[rng.integers(0, 200, n_vectors)]
    latent += rng.normal(size=(n_vectors, 32))
    mixing = rng.normal(size=(32, dim)) / 6.0
    return np.maximum(latent @ mixing, 0).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    """Time the coreset, print the result, write the JSON file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("mpdd", "synthetic"), default="mpdd")
    parser.add_argument("--image-size", type=int, default=512, help="mpdd: px per side")
    parser.add_argument("--n-vectors", type=int, default=600_000, help="synthetic: N")
    parser.add_argument("--dim", type=int, default=152, help="synthetic: D")
    parser.add_argument("--ratio", type=float, default=0.01)
    parser.add_argument("--projection-dim", type=int, default=0, help="0: exact (the default)")
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=None, help="mpdd: .npy feature cache")
    parser.add_argument("--results-file", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    log = logging.getLogger("coreset_speed")

    import torch

    from edgead import __version__
    from edgead.bench import git_sha, write_report
    from edgead.models.coreset import CoresetStats, greedy_coreset

    torch.set_num_threads(args.threads)
    if args.source == "synthetic":
        features = synthetic_features(args.n_vectors, args.dim, args.seed)
    elif args.cache is not None and args.cache.is_file():
        features = np.load(args.cache, allow_pickle=False)
    else:
        features = mpdd_features(args.image_size, log)
        if args.cache is not None:
            np.save(args.cache, features, allow_pickle=False)
    greedy_coreset(features[:20_000], 0.01, projection_dim=args.projection_dim)  # warm-up

    runs: list[dict[str, Any]] = []
    for _ in range(args.repeat):
        load_before = list(os.getloadavg())
        stats = CoresetStats()
        cpu0, t0 = time.process_time(), time.perf_counter()
        greedy_coreset(
            features,
            args.ratio,
            projection_dim=args.projection_dim,
            seed=args.seed,
            block_size=args.block_size,
            stats=stats,
        )
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        runs.append(
            {
                "seconds": wall,
                "cpu_seconds": cpu,
                "n_selected": stats.n_selected,
                "n_passes": stats.n_blocks,
                "load_avg_before": load_before,
                "load_avg_after": list(os.getloadavg()),
            }
        )
        print(
            f"coreset {features.shape[0]:,} x {features.shape[1]} -> {stats.n_selected:,} "
            f"({args.ratio:.1%}): {wall:.1f} s wall, {cpu:.1f} s CPU, {stats.n_blocks} passes; "
            f"load average {load_before[0]:.1f} -> {runs[-1]['load_avg_after'][0]:.1f} "
            f"on {os.cpu_count()} cores"
        )
    report = {
        "schema_version": SCHEMA_VERSION,
        "edgead_version": __version__,
        "git_sha": git_sha(REPO),
        "detector": "patchcore",
        "benchmark": "coreset_speed",
        "source": args.source,
        "host": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": args.threads,
        "n_vectors": int(features.shape[0]),
        "dim": int(features.shape[1]),
        "ratio": args.ratio,
        "projection_dim": args.projection_dim,
        "block_size": args.block_size,
        "results": {"runs": runs, "best_seconds": min(r["seconds"] for r in runs)},
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
    }
    out = write_report(report, args.results_file, OUT_DIR, "coreset_speed")
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
