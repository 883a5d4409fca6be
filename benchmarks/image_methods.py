"""Side-by-side benchmark of the image detectors on MPDD and ELPV: accuracy, fit time, runtime.

For each data set (same image size and split for every method) and each method:
    1. fit on the normal training images (seeded), timed (`fit_s`);
    2. score the test split with the torch detector: image AUROC / AUPRC / best F1 and, with masks,
       pixel AUROC (edgead.metrics);
    3. export with edgead's exporter (`edgead.export.export_detector`, target "openvino", fp32:
       ONNX + OpenVINO IR in one bundle, parity-checked; PatchCore with the exact "flat" index)
       and report the bundle size;
    4. load the bundle with the torch-free runtime (`edgead.runtime.Detector`) on ONNX Runtime and
       on OpenVINO (CPU, `--threads`), warm up, then time `--iters` single frames (uint8 RGB at
       the model size): p50 / p95 latency in ms per frame; and compare the runtime's raw scores on
       `--parity-n` test images with the torch scores (max relative difference).
Each (data set, method) result is written as soon as it is done to
`benchmarks/results/image_methods/<dataset>__<method>.json`, so runs can be split; `--summarize`
(also run at the end) collects them into `image_methods.json`, a Markdown table and a PNG chart.

The bundles' thresholds are set F1-optimally on the test split (benchmark-only bundles; no metric
below depends on them). ELPV: a seeded split (`--elpv-train-cap`, `--elpv-test-cap`).

    .venv/bin/python benchmarks/image_methods.py --datasets mpdd --methods padim,fastflow
    .venv/bin/python benchmarks/image_methods.py --summarize
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
OUT_DIR = RESULTS / "image_methods"
SCHEMA_VERSION = 1
METHODS = (
    "patchcore",
    "padim",
    "padim_global",
    "fastflow",
    "conv_ae",
    "conv_vae",
    "deep_svdd_image",
    "mae",
    "mae_pixels",
    "csi",
    "csi_projection",
)
#: benchmark rows that are a registered detector with settings: row name -> (detector, config).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "padim_global": ("padim", {"pooling": "global", "n_features": 0}),
    "mae_pixels": ("mae", {"target": "pixels"}),
    "csi_projection": ("csi", {"score_layer": "projection"}),
}
DATASETS = ("mpdd", "elpv")

logger = logging.getLogger("benchmarks.image_methods")


def _dataset_root() -> Path:
    env = os.environ.get("EDGEAD_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"


def load_dataset(name: str, image_size: int, args: argparse.Namespace) -> dict[str, Any]:
    """{"train": uint8 (N, S, S, 3), "test", "labels" (M,), "masks" bool (M, S, S) | None, ...}."""
    if name == "mpdd":
        from edgead.data.images import MVTecFolder

        data: Any = MVTecFolder(_dataset_root() / "mpdd_metal_plate", image_size)
    elif name == "elpv":
        from edgead.data.elpv import ElpvDataset

        data = ElpvDataset(
            image_size, seed=args.seed, max_train=args.elpv_train_cap, max_test=args.elpv_test_cap
        )
    else:
        raise SystemExit(f"unknown dataset {name!r}; use one of {', '.join(DATASETS)}")
    test = data.test_set()
    return {
        "train": np.stack(list(data.train_images())),
        "test": np.stack(list(test.images)),
        "labels": np.asarray(test.labels),
        "masks": test.masks_array(),
        "describe": data.describe() if hasattr(data, "describe") else {"name": name},
    }


def _time_runtime(
    bundle: Path, backend: str, frames: np.ndarray, args: argparse.Namespace
) -> dict[str, Any]:
    """Latency per frame (ms) of the runtime on `backend`, plus its raw scores on the frames."""
    from edgead.runtime import Detector

    det = Detector.load(bundle, device="cpu", backend=backend, threads=args.threads)
    try:
        used = det.backend
        scores = [
            float(det(frame, channel_order="RGB").raw_score) for frame in frames[: args.parity_n]
        ]
        for i in range(args.warmup):
            det(frames[i % len(frames)], channel_order="RGB")
        total, graph = [], []
        for i in range(args.iters):
            t0 = time.perf_counter()
            res = det(frames[i % len(frames)], channel_order="RGB")
            total.append((time.perf_counter() - t0) * 1e3)
            graph.append(float(res.timings_ms.get("graph", float("nan"))))
    finally:
        det.close()
    return {
        "backend_used": used,
        "fallbacks": list(getattr(det, "fallbacks", [])),
        "latency_ms_p50": float(np.percentile(total, 50)),
        "latency_ms_p95": float(np.percentile(total, 95)),
        "graph_ms_p50": float(np.nanpercentile(graph, 50)),
        "raw_scores": scores,
    }


def run_one(
    dataset: str, data: dict[str, Any], method: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Fit, score, export and time one method on one data set; the result dict."""
    import torch

    from edgead.calibrate import normalisation_from_scores
    from edgead.export import export_detector
    from edgead.metrics import image_metrics, pixel_metrics
    from edgead.models.base import create_detector

    detector, preset = VARIANTS.get(method, (method, {}))
    cfg = {"image_size": args.image_size, **preset, **json.loads(args.config.get(method, "{}"))}
    det = create_detector(detector, cfg)
    t0 = time.perf_counter()
    det.fit(data["train"], seed=args.seed)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = det.score(data["test"])
    score_s = time.perf_counter() - t0
    image = image_metrics(data["labels"], out.scores)
    result: dict[str, Any] = {
        "dataset": dataset,
        "method": method,
        "config": cfg,
        "seed": args.seed,
        "n_train": int(len(data["train"])),
        "n_test": int(len(data["test"])),
        "image_auroc": image["auroc"],
        "image_auprc": image["auprc"],
        "image_f1": image["f1"],
        "fit_s": fit_s,
        "torch_score_ms_per_image": score_s * 1e3 / len(data["test"]),
        "describe": det.describe(),
        "torch_threads": torch.get_num_threads(),
    }
    if data["masks"] is not None and out.anomaly_maps is not None:
        result["pixel_auroc"] = pixel_metrics(data["masks"], out.anomaly_maps)["pixel_auroc"]
    threshold = image["f1_threshold"]
    meta = {
        "config": cfg,
        "seed": args.seed,
        "threshold": {"value": threshold, "policy": "f1 (benchmark only)"},
        "normalisation": normalisation_from_scores(out.scores, threshold),
    }
    with tempfile.TemporaryDirectory(prefix="edgead-bench-") as tmp:
        bundle = Path(tmp) / f"{method}.edgead"
        t0 = time.perf_counter()
        # PatchCore with exact search, so that every row compares the bundle with its torch
        # model; the compressed default index is measured by index_tradeoff.py.
        index = {"index": "flat"} if detector == "patchcore" else None
        manifest = export_detector(
            det,
            meta,
            "openvino",
            "fp32",
            bundle,
            parity_inputs=data["test"][: args.parity_n],
            index=index,
        )
        result["export_s"] = time.perf_counter() - t0
        result["bundle_mb"] = bundle.stat().st_size / 1e6
        result["export_parity"] = (manifest.export or {}).get("parity")
        torch_scores = out.scores[: args.parity_n].astype(np.float64)
        for backend in ("onnxruntime", "openvino"):
            timing = _time_runtime(bundle, backend, data["test"], args)
            raw = np.asarray(timing.pop("raw_scores"), dtype=np.float64)
            timing["max_rel_score_diff"] = float(
                np.max(np.abs(raw - torch_scores) / np.maximum(np.abs(torch_scores), 1e-12))
            )
            result[backend] = timing
    return result


def _envelope(args: argparse.Namespace) -> dict[str, Any]:
    from edgead import __version__
    from edgead.bench import git_sha

    return {
        "schema_version": SCHEMA_VERSION,
        "edgead_version": __version__,
        "git_sha": git_sha(RESULTS.parent),
        "host": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_avg": list(os.getloadavg()),
        "threads": args.threads,
        "image_size": args.image_size,
    }


def summarize(out_dir: Path = OUT_DIR) -> dict[str, Any]:
    """Collect per-run JSON files of `out_dir` into `out_dir`.json, .md (table) and .png (chart)."""
    rows = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*__*.json"))]
    if not rows:
        raise SystemExit(f"no results in {out_dir}; run the benchmark first")
    rows.sort(
        key=lambda r: (DATASETS.index(r["result"]["dataset"]), METHODS.index(r["result"]["method"]))
    )
    report = {"schema_version": SCHEMA_VERSION, "runs": rows}
    out_dir.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    header = (
        "| data | method | img AUROC | AUPRC | F1 | pixel AUROC | fit s | ORT ms | OV ms |"
        " bundle MB | max rel diff |"
    )
    lines = [header, "|" + "---|" * 11]
    for row in rows:
        r = row["result"]
        pix = f"{r['pixel_auroc']:.3f}" if "pixel_auroc" in r else "-"
        ort, ov = r.get("onnxruntime", {}), r.get("openvino", {})
        diff = max(ort.get("max_rel_score_diff", np.nan), ov.get("max_rel_score_diff", np.nan))
        lines.append(
            f"| {r['dataset']} | {r['method']} | {r['image_auroc']:.3f} | "
            f"{r['image_auprc']:.3f} | {r['image_f1']:.3f} | {pix} | {r['fit_s']:.0f} | "
            f"{ort.get('latency_ms_p50', np.nan):.1f} | "
            f"{ov.get('latency_ms_p50', np.nan):.1f} | {r['bundle_mb']:.1f} | "
            f"{diff:.1e} |"
        )
    table = "\n".join(lines)
    out_dir.with_suffix(".md").write_text(table + "\n")
    _chart(rows, out_dir.with_suffix(".png"))
    print(table)
    return report


def _chart(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in DATASETS if any(r["result"]["dataset"] == d for r in rows)]
    methods = [m for m in METHODS if any(r["result"]["method"] == m for r in rows)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / max(1, len(datasets))
    x = np.arange(len(methods))
    for j, dataset in enumerate(datasets):
        by_method = {
            r["result"]["method"]: r["result"] for r in rows if r["result"]["dataset"] == dataset
        }
        auroc = [by_method.get(m, {}).get("image_auroc", np.nan) for m in methods]
        ort = [
            by_method.get(m, {}).get("onnxruntime", {}).get("latency_ms_p50", np.nan)
            for m in methods
        ]
        axes[0].bar(x + j * width, auroc, width, label=dataset)
        axes[1].bar(x + j * width, ort, width, label=f"{dataset} (ONNX Runtime)")
    for ax, title in zip(axes, ("image AUROC", "latency per frame, p50 (ms)"), strict=True):
        ax.set_xticks(x + width * (len(datasets) - 1) / 2, methods, rotation=20, fontsize=8)
        ax.set_title(title)
        ax.legend(fontsize=8)
    axes[0].set_ylim(0.0, 1.0)
    axes[0].axhline(0.5, color="gray", lw=0.8, ls="--")
    fig.suptitle(f"edgead image methods, {rows[0]['result']['config']['image_size']} px")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (see module docstring); returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="mpdd,elpv")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--parity-n", type=int, default=4)
    parser.add_argument("--elpv-train-cap", type=int, default=150)
    parser.add_argument("--elpv-test-cap", type=int, default=150)
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="METHOD=JSON",
        help='config overrides, e.g. fastflow={"epochs": 20}',
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=OUT_DIR,
        help="per-run JSON files; the summary goes to OUT_DIR.{json,md,png}",
    )
    parser.add_argument("--summarize", action="store_true", help="only rebuild table and chart")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.summarize:
        summarize(args.out_dir)
        return 0
    overrides = {}
    for item in args.config:
        method, _, value = item.partition("=")
        overrides[method.strip()] = value
    args.config = overrides
    import torch

    torch.set_num_threads(args.threads)
    from edgead.models.base import list_detectors

    available = set(list_detectors("image"))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for dataset in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        data = load_dataset(dataset, args.image_size, args)
        logger.info("%s: %d train, %d test", dataset, len(data["train"]), len(data["test"]))
        for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
            if VARIANTS.get(method, (method,))[0] not in available:
                logger.warning("%s is not registered here; skipped", method)
                continue
            logger.info("%s / %s ...", dataset, method)
            result = run_one(dataset, data, method, args)
            record = {**_envelope(args), "data": data["describe"], "result": result}
            path = args.out_dir / f"{dataset}__{method}.json"
            path.write_text(json.dumps(record, indent=2, default=str) + "\n")
            logger.info(
                "%s / %s: image AUROC %.3f, fit %.0f s -> %s",
                dataset,
                method,
                result["image_auroc"],
                result["fit_s"],
                path,
            )
    summarize(args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
