"""Which training patches the memory bank keeps: banks built from training images prepared one
way, scoring test images prepared another way (PatchCore, cached features, several seeds).

    .venv/bin/python benchmarks/make_gray_jpeg_set.py --out /tmp/gray_big --train-crops 14 \\
        --test-crops 6 --seed 1
    .venv/bin/python benchmarks/patchcore_bank_swap.py --data /tmp/gray_big --test-prep area_u8 \\
        --banks area_u8:gauss128,pil_u8:gauss128 --seeds 0,1,2

A bank is `TRAIN_PREP:PROJECTION[:RATIO]`: the training images' preprocessing (as in
`patchcore_ablation.py`: `area_u8` = OpenCV area resize to uint8, edgead's resize before
issue 12; `pil_u8` = Pillow's antialiased bilinear to uint8, edgead's `bilinear_aa` and
anomalib's torchvision resize up to rounding; `torch_f32` = anomalib's own reading, Pillow +
torchvision in float, no rounding), the coreset's distance space (`gauss128`: edgead's 128-d
Gaussian projection; `none`: exact distances; `anomalib`: anomalib 2.7's
`SparseRandomProjection(eps=0.9)` and random start, needs the compare extra) and the coreset
ratio (default 0.01). Every bank scores the SAME test features (`--test-prep`), so a difference
between rows comes from the bank alone; each seed draws the projection and the first centre.
Image score: max patch distance and the mean of the 3 largest (edgead's default since issue 12).

Features are computed once through edgead's embedder (efficientnet_lite0, 224 px) and cached in
benchmarks/results/ablation_cache/. Prints a table; writes benchmarks/results/bank_swap-<UTC>.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
from patchcore_ablation import OUT_DIR, REPO, SCORES, cached_embeddings, score_all

SCHEMA_VERSION = 1
log = logging.getLogger("patchcore_bank_swap")


def bank_indices(features: np.ndarray, projection: str, ratio: float, seed: int) -> np.ndarray:
    """Coreset indices into `features` (N, D) for one bank setting and seed."""
    from edgead.models.coreset import greedy_coreset

    if projection == "anomalib":
        import torch
        from anomalib.models.components.dimensionality_reduction import SparseRandomProjection

        torch.manual_seed(seed)
        np.random.seed(seed)  # anomalib's projection draws from numpy's global RNG
        tensor = torch.from_numpy(features)
        srp = SparseRandomProjection(eps=0.9)
        srp.fit(tensor)
        vectors = srp.transform(tensor).numpy().astype(np.float32)
        start = int(torch.randint(high=len(features), size=(1,)).item())
        return greedy_coreset(vectors, ratio, projection_dim=0, seed=seed, start_index=start)
    dims = {"gauss128": 128, "none": 0}
    if projection not in dims:
        raise SystemExit(f"unknown projection {projection!r}: gauss128, none or anomalib")
    return greedy_coreset(features, ratio, projection_dim=dims[projection], seed=seed)


def image_aurocs(test_emb: np.ndarray, bank: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Image AUROC of each of the ablation's image scores (max, anomalib's re-weighting with
    k = 9, top-3 mean) against `bank`, scored by the ablation's `score_all` (no maps)."""
    from edgead import metrics

    scored = score_all(test_emb, bank, grid=0, size=0, sigmas=[], masks=None)
    return {kind: metrics.image_metrics(labels, scored[kind])["auroc"] for kind in SCORES}


def main(argv: list[str] | None = None) -> int:
    """Build every bank for every seed, score the fixed test features, print and write."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="MVTec-layout folder, 'elpv' or 'mpdd'")
    parser.add_argument("--test-prep", default="pil_u8")
    parser.add_argument("--banks", default="area_u8:gauss128,pil_u8:gauss128")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results-file", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    from edgead.bench import git_sha, write_report
    from edgead.data.datasets import load_image_dataset

    options = {"train_fraction": 0.66, "seed": 0} if args.data == "elpv" else {}
    data = (
        str(REPO.parent / "shared/datasets/mpdd_metal_plate") if args.data == "mpdd" else args.data
    )
    dataset = load_image_dataset(data, 224, **options)
    test = dataset.test_set()
    labels = np.asarray(test.labels)
    test_emb, _ = cached_embeddings(data, args.test_prep, 224, list(test.paths), "test")
    rows: list[dict[str, Any]] = []
    lines = [
        "| bank (train prep : projection : ratio) | seeds | image AUROC max | reweight k=9 "
        "| top-3 mean |"
    ]
    lines.append("|---|---|---|---|---|")
    for spec in [b for b in args.banks.split(",") if b]:
        prep, projection, *rest = spec.split(":")
        ratio = float(rest[0]) if rest else 0.01
        train_emb, _ = cached_embeddings(data, prep, 224, list(dataset.train_paths), "train")
        features = np.ascontiguousarray(train_emb.reshape(-1, train_emb.shape[-1]))
        per_seed = []
        for seed in [int(s) for s in args.seeds.split(",")]:
            t0 = time.perf_counter()
            keep = bank_indices(features, projection, ratio, seed)
            result = {"seed": seed, **image_aurocs(test_emb, features[keep], labels)}
            result["seconds"] = time.perf_counter() - t0
            per_seed.append(result)
            log.info("%s seed %d: %s", spec, seed, json.dumps(result))
        rows.append({"bank": spec, "seeds": per_seed})
        cells = [np.array([r[kind] for r in per_seed]) for kind in SCORES]
        stats = " | ".join(f"{c.mean():.4f} +- {c.std():.4f}" for c in cells)
        lines.append(f"| {spec} | {len(per_seed)} | {stats} |")
        print("\n".join(lines), flush=True)
    report = {
        "schema_version": SCHEMA_VERSION,
        "git_sha": git_sha(REPO),
        "data": data,
        "test_prep": args.test_prep,
        "n_train": len(dataset.train_paths),
        "n_test": len(labels),
        "host": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_avg": list(os.getloadavg()),
        "results": rows,
        "table_md": "\n".join(lines),
    }
    out = write_report(report, args.results_file, OUT_DIR, "bank_swap")
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
