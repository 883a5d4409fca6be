"""Tiling vs resizing on MPDD metal_plate (512 px images): image and pixel AUROC.

    .venv/bin/python benchmarks/tiling_mpdd.py                       # PatchCore
    .venv/bin/python benchmarks/tiling_mpdd.py --detectors patchcore padim --coreset-ratio 0.1

Protocol: `edgead train` + `edgead eval` as library calls (`edgead.training.train_run` /
`evaluate_run`), same detector config and seed for both:

- resize: the whole 512 px image resized to 224 px (`--image-size 224`);
- tiled:  the 512 px image scored as 224 px tiles (`--image-size 512 --tile 224
  --tile-overlap 0.25`: 3 x 3 tiles, image score = max over tiles, maps stitched).

Image AUROC on the test split. Pixel AUROC is measured both ways at 512 px: the tiled maps are
512 px; the resize maps (224 px) are upsampled bilinearly to 512 px, as the runtime does when
it returns a map at the frame's resolution (`resize_map`). The masks are the 512 px originals.

Prints a Markdown table and writes benchmarks/results/tiling_mpdd-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
OUT_DIR = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
FRAME_PX = 512
TILE_PX = 224


def _mpdd_root() -> Path:
    env = os.environ.get("EDGEAD_DATA")
    return (Path(env) if env else REPO.parent / "shared" / "datasets") / "mpdd_metal_plate"


def _pixel_auroc_512(run: Path, root: Path) -> float:
    """Pixel AUROC of a run's test maps at 512 px (upsampled when the run scores smaller)."""
    from edgead import metrics
    from edgead.data.datasets import load_image_dataset
    from edgead.ops.postprocess import resize_map
    from edgead.rundir import load_run
    from edgead.training import image_load_size, run_tiling, score_images_of

    detector, meta = load_run(run)
    tiling = run_tiling(meta)
    test = load_image_dataset(root, image_load_size(detector, tiling)).test_set()
    masks = load_image_dataset(root, FRAME_PX).test_set().masks_array()
    maps = []
    for start in range(0, len(test), 8):
        chunk = [test.images[i] for i in range(start, min(start + 8, len(test)))]
        out = score_images_of(detector, chunk, tiling)
        maps.extend(resize_map(m, (FRAME_PX, FRAME_PX)) for m in out.anomaly_maps)
    return float(metrics.pixel_metrics(masks, np.stack(maps))["pixel_auroc"])


def run_one(
    name: str, mode: str, config: dict[str, Any], root: Path, work: Path, seed: int
) -> dict[str, Any]:
    """Train, evaluate and measure one (detector, resize | tiled) pair."""
    from edgead.evaluation import evaluate_run
    from edgead.training import train_run

    tiling = None
    cfg = dict(config)
    cfg["image_size"] = TILE_PX
    if mode == "tiled":
        tiling = {"frame_size": [FRAME_PX, FRAME_PX], "tile": TILE_PX, "overlap": 0.25}
    run = work / f"{name}_{mode}"
    t0 = time.perf_counter()
    meta = train_run(name, root, run, cfg, seed=seed, tiling=tiling)
    t1 = time.perf_counter()
    result = evaluate_run(run)
    t2 = time.perf_counter()
    return {
        "detector": name,
        "mode": mode,
        "config": cfg,
        "tiling": tiling,
        "n_fit": meta["data"]["n_train"],
        "n_fit_tiles": meta["data"].get("n_fit_tiles"),
        "image_auroc": result["image_auroc"],
        "pixel_auroc_native": result.get("pixel_auroc"),
        # tiled maps are already 512 px: evaluate_run measured them there
        "pixel_auroc_512": result.get("pixel_auroc") if tiling else _pixel_auroc_512(run, root),
        "image_f1": result["image_f1"],
        "fit_s": round(t1 - t0, 1),
        "eval_s": round(t2 - t1, 1),
        "seconds_per_image": result["seconds_per_image"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison; returns the report (also written as JSON)."""
    import torch

    from edgead import __version__
    from edgead.bench import git_sha, write_report

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--detectors", nargs="+", default=["patchcore"])
    parser.add_argument("--coreset-ratio", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 1)))
    parser.add_argument("--results-file", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    root = _mpdd_root()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgead-tiling-") as tmp:
        for name in args.detectors:
            config = {"coreset_ratio": args.coreset_ratio} if name == "patchcore" else {}
            for mode in ("resize", "tiled"):
                rows.append(run_one(name, mode, config, root, Path(tmp), args.seed))
                print(rows[-1], flush=True)
    print(
        "\n| detector | mode | fit tiles | image AUROC | pixel AUROC @512 | pixel AUROC native |"
        " fit s | s/image |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['detector']} | {r['mode']} | {r['n_fit_tiles'] or r['n_fit']} | "
            f"{r['image_auroc']:.4f} | {r['pixel_auroc_512']:.4f} | "
            f"{r['pixel_auroc_native']:.4f} | {r['fit_s']} | {r['seconds_per_image']:.3f} |"
        )
    report = {
        "schema_version": SCHEMA_VERSION,
        "edgead_version": __version__,
        "git_sha": git_sha(REPO),
        "benchmark": "tiling_mpdd",
        "host": platform.machine(),
        "threads": args.threads,
        "results": rows,
    }
    print("wrote", write_report(report, args.results_file, OUT_DIR, "tiling_mpdd"))
    return report


if __name__ == "__main__":
    main()
