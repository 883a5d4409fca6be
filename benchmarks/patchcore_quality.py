"""PatchCore quality grid: data set x image size x coreset ratio -> AUROC, AUPRC, F1, pixel AUROC.

    .venv/bin/python benchmarks/patchcore_quality.py                   # MPDD + ELPV, full grid
    .venv/bin/python benchmarks/patchcore_quality.py --datasets mpdd --sizes 256 --ratios 0.1

Protocol (the same as `edgead train` + `edgead eval`): default backbone (efficientnet_lite0,
ImageNet weights); fit on the training images minus the seeded 10 % normal hold-out that
`edgead.training` keeps for the threshold; evaluate on the whole test split. ELPV uses the
package's seeded normal-only split, capped with --elpv-max-train / --elpv-max-test to fit the
time budget (the caps are written to the JSON). Features are extracted once per data set and
size; each ratio then runs its own coreset and scoring. Fit seconds are split into feature
extraction and coreset selection; seconds per image cover embedding, search and map
post-processing of the test images.

Prints a Markdown table and writes benchmarks/results/patchcore_quality-<UTC time>.json.
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

SCHEMA_VERSION = 1
OUT_DIR = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def _dataset_spec(name: str) -> str:
    if name == "elpv":
        return "elpv"
    env = os.environ.get("EDGEAD_DATA")
    root = Path(env) if env else REPO.parent / "shared" / "datasets"
    return str(root / "mpdd_metal_plate")


def run_dataset(
    name: str, size: int, ratios: list[float], args: argparse.Namespace, log: logging.Logger
) -> list[dict[str, Any]]:
    """Rows of results for one data set at one image size, one per coreset ratio."""
    from edgead import metrics
    from edgead.data.datasets import load_image_dataset
    from edgead.models.base import create_detector
    from edgead.models.coreset import greedy_coreset
    from edgead.ops.postprocess import upsample_and_blur
    from edgead.training import DEFAULT_VAL_FRACTION, MIN_VAL_IMAGES, holdout_split

    options = (
        {"max_train": args.elpv_max_train, "max_test": args.elpv_max_test} if name == "elpv" else {}
    )
    dataset = load_image_dataset(_dataset_spec(name), size, **options)
    train_all = dataset.train_images()
    fit_idx, _ = holdout_split(len(train_all), DEFAULT_VAL_FRACTION, MIN_VAL_IMAGES, args.seed)
    test = dataset.test_set()
    labels = np.asarray(test.labels)
    masks = test.masks_array()
    det = create_detector("patchcore", {"image_size": size})

    t0 = time.perf_counter()
    train_emb = det.embed(train_all[fit_idx])
    features = train_emb.reshape(-1, train_emb.shape[-1])
    feature_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    test_emb = det.embed(test.images)
    embed_test_s = time.perf_counter() - t0
    log.info(
        "%s %d px: %d fit images (%d patches), %d test images; features %.1f s + %.1f s",
        name,
        size,
        len(fit_idx),
        len(features),
        len(labels),
        feature_s,
        embed_test_s,
    )
    rows = []
    for ratio in ratios:
        t0 = time.perf_counter()
        keep = greedy_coreset(
            features, ratio, projection_dim=det.config.projection_dim, seed=args.seed
        )
        coreset_s = time.perf_counter() - t0
        det.load_state_arrays({"memory_bank": features[keep]})
        t0 = time.perf_counter()
        scores = np.empty(len(labels), dtype=np.float32)
        maps = [] if masks is not None else None
        for start in range(0, len(labels), 16):
            patch, _ = det.patch_distances(test_emb[start : start + 16])
            scores[start : start + 16] = patch.reshape(patch.shape[0], -1).max(axis=1)
            blurred = upsample_and_blur(patch, (size, size), det.config.blur_sigma)
            if maps is not None:
                maps.append(blurred)
        search_s = time.perf_counter() - t0
        image = metrics.image_metrics(labels, scores)
        row: dict[str, Any] = {
            "dataset": name,
            "image_size": size,
            "coreset_ratio": ratio,
            "n_fit": int(len(fit_idx)),
            "n_test": int(len(labels)),
            "memory_bank": int(len(keep)),
            "image_auroc": image["auroc"],
            "image_auprc": image["auprc"],
            "image_f1": image["f1"],
            "fit_feature_s": feature_s,
            "fit_coreset_s": coreset_s,
            "s_per_image": (embed_test_s + search_s) / len(labels),
        }
        if maps is not None and masks is not None:
            row.update(metrics.pixel_metrics(masks, np.concatenate(maps)))
        log.info("%s", json.dumps(row))
        rows.append(row)
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the result rows."""
    head = (
        "| data | size | coreset | bank | image AUROC | AUPRC | F1 | pixel AUROC | "
        "fit: features s | fit: coreset s | s / test image |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        pixel = f"{r['pixel_auroc']:.3f}" if "pixel_auroc" in r else "-"
        lines.append(
            f"| {r['dataset']} | {r['image_size']} | {r['coreset_ratio']:.0%} | {r['memory_bank']} "
            f"| {r['image_auroc']:.3f} | {r['image_auprc']:.3f} | {r['image_f1']:.3f} | {pixel} "
            f"| {r['fit_feature_s']:.1f} | {r['fit_coreset_s']:.1f} | {r['s_per_image']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the grid, print the table, write the JSON file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="mpdd,elpv")
    parser.add_argument("--sizes", default="224,256")
    parser.add_argument("--ratios", default="0.01,0.1,0.25")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--elpv-max-train", type=int, default=150)
    parser.add_argument("--elpv-max-test", type=int, default=250)
    parser.add_argument("--results-file", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    log = logging.getLogger("patchcore_quality")

    import torch

    torch.set_num_threads(args.threads)
    from edgead import __version__
    from edgead.bench import git_sha, write_report

    load_before = list(os.getloadavg())
    rows: list[dict[str, Any]] = []
    ratios = [float(r) for r in args.ratios.split(",") if r]
    for name in [d for d in args.datasets.split(",") if d]:
        for size in [int(s) for s in args.sizes.split(",") if s]:
            rows.extend(run_dataset(name, size, ratios, args, log))
    table = render(rows)
    print(table)
    report = {
        "schema_version": SCHEMA_VERSION,
        "edgead_version": __version__,
        "git_sha": git_sha(REPO),
        "detector": "patchcore",
        "backbone": "efficientnet_lite0",
        "seed": args.seed,
        "host": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": args.threads,
        "load_avg_before": load_before,
        "load_avg_after": list(os.getloadavg()),
        "elpv_caps": {"max_train": args.elpv_max_train, "max_test": args.elpv_max_test},
        "results": rows,
        "table_md": table,
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
    }
    out = write_report(report, args.results_file, OUT_DIR, "patchcore_quality")
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
