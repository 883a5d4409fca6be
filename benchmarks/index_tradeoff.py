"""Size / accuracy / speed trade-off of compressed PatchCore memory-bank indexes (MPDD, ELPV).

For each data set: fit PatchCore (edgead.models.create_detector("patchcore")), keep its memory bank
(M, D) and the patch embeddings of the test images (N_img, h*w, D) (cached as .npz under
--cache-dir), then for every index setting measure bytes, compression vs the fp32 bank, recall@1,
nearest-distance error, image / pixel AUROC with that index and with exact search, and search
ms per frame (batch 1 = h*w queries, faiss threads = --threads). Writes one JSON file to
benchmarks/results/, prints a table (also as Markdown with --markdown) and a PNG plot of AUROC
against bytes.

    .venv/bin/python benchmarks/index_tradeoff.py --datasets mpdd,elpv --threads 2
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("index_tradeoff")

ROOT = Path(__file__).resolve().parents[1]
#: (label, options for resolve_factory / FaissIndex): name, index_dim, rerank.
SETTINGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("flat", {"index": "flat"}),
    ("fp16", {"index": "fp16"}),
    ("sq8", {"index": "sq8"}),
    ("pq", {"index": "pq"}),
    ("pq4", {"index": "pq4"}),
    ("ivfpq", {"index": "ivfpq"}),
    ("hnsw", {"index": "hnsw"}),
    ("pq4+rerank16", {"index": "pq4", "rerank": 16}),
    ("pca64-pq4", {"index": "pq4", "index_dim": 64}),
    ("rr64-sq8", {"index": "sq8", "index_dim": 64, "reduce": "rr"}),
)


def _data_root(arg: str | None) -> Path:
    import os

    if arg:
        return Path(arg)
    return Path(os.environ.get("EDGEAD_DATA", ROOT.parent / "shared" / "datasets"))


def load_embeddings(dataset: str, args: argparse.Namespace) -> dict[str, np.ndarray]:
    """{"bank" (M, D), "emb" (N, h*w, D), "labels" (N,), "masks" (N, S, S) or empty, "grid"}."""
    cache = Path(args.cache_dir) / (
        f"{dataset}_s{args.image_size}_c{args.coreset_ratio}"
        f"_t{args.elpv_max_train}_v{args.elpv_max_test}.npz"
    )
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            logger.info("using cached embeddings %s", cache)
            return {k: z[k] for k in z.files}
    import torch

    from edgead.data.datasets import load_image_dataset
    from edgead.models import create_detector

    torch.set_num_threads(args.threads)
    if dataset == "mpdd":
        data = load_image_dataset(_data_root(args.data_root) / "mpdd_metal_plate", args.image_size)
    else:
        data = load_image_dataset(
            "elpv",
            args.image_size,
            seed=0,
            max_train=args.elpv_max_train,
            max_test=args.elpv_max_test,
        )
    det = create_detector(
        "patchcore", {"image_size": args.image_size, "coreset_ratio": args.coreset_ratio}
    )
    t0 = time.perf_counter()
    det.fit(list(data.train_images()), seed=0)
    test = data.test_set()
    emb = det.embed(list(test.images))  # type: ignore[attr-defined]
    masks = test.masks_array()
    out = {
        "bank": det.memory_bank_,
        "emb": emb.astype(np.float32),  # type: ignore[attr-defined]
        "labels": np.asarray(test.labels),
        "grid": np.array(det.grid_hw),  # type: ignore[attr-defined]
        "masks": masks if masks is not None else np.zeros((0, 0, 0), bool),
        "blur_sigma": np.array(det.config.blur_sigma),
    }
    logger.info(
        "%s: PatchCore fit + embed %.1f s, bank %s, test %s",
        dataset,
        time.perf_counter() - t0,
        out["bank"].shape,
        emb.shape,
    )
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


def run_dataset(
    dataset: str, arrays: dict[str, np.ndarray], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Measure every setting on one data set; rows of the results table."""
    from edgead.export.index import (
        IndexValidation,
        auroc_change,
        auroc_with,
        index_nbytes,
        resolve_factory,
        time_search,
    )
    from edgead.ops.nn_index import FaissIndex

    bank = arrays["bank"]
    grid = tuple(int(v) for v in arrays["grid"])
    masks = arrays["masks"] if arrays["masks"].size else None
    val = IndexValidation(
        embeddings=arrays["emb"],
        labels=arrays["labels"],
        masks=masks,
        grid=grid,
        image_size=(args.image_size, args.image_size),  # type: ignore[arg-type]
        blur_sigma=float(arrays["blur_sigma"]),
    )
    queries = val.embeddings.reshape(-1, bank.shape[1])
    import faiss

    faiss.omp_set_num_threads(args.bulk_threads)
    exact = FaissIndex.build(bank, "Flat")
    _, i_exact = exact.search(queries, 1)
    d_exact = exact.search(queries, 1)[0][:, 0]
    fp32 = bank.nbytes
    reference = auroc_with(val, exact)
    rows = []
    wanted = set(args.settings.split(",")) if args.settings else None
    for label, opts in SETTINGS:
        if wanted is not None and label not in wanted:
            continue
        name = opts["index"]
        factory, nprobe = resolve_factory(
            name,
            bank.shape[1],
            bank.shape[0],
            index_dim=opts.get("index_dim"),
            reduce=opts.get("reduce", "pca"),
        )
        t0 = time.perf_counter()
        index = FaissIndex.build(bank, factory, nprobe=nprobe, rerank=opts.get("rerank", 0))
        build_s = time.perf_counter() - t0
        faiss.omp_set_num_threads(args.bulk_threads)  # bulk searches for the accuracy numbers
        d, i = index.search(queries, 1)
        rel = np.abs(d[:, 0] - d_exact) / np.maximum(d_exact, 1e-12)
        # interleave timings of exact and candidate so machine load hits both alike
        faiss.omp_set_num_threads(args.threads)  # timed searches: the setting under test
        t_idx, t_ex = [], []
        for _ in range(args.repeats):
            t_idx.append(
                time_search(index, queries, frame_patches=grid[0] * grid[1], max_frames=args.frames)
            )
            t_ex.append(
                time_search(exact, queries, frame_patches=grid[0] * grid[1], max_frames=args.frames)
            )
        row = {
            "dataset": dataset,
            "setting": label,
            "factory": factory,
            "nprobe": nprobe,
            "rerank": opts.get("rerank", 0),
            "bytes": index_nbytes(index),
            "recall_at_1": float(np.mean(i[:, 0] == i_exact[:, 0])),
            "rel_dist_error_mean": float(rel.mean()),
            "rel_dist_error_p99": float(np.percentile(rel, 99)),
            "search_ms_per_frame": float(np.median(t_idx)),
            "exact_search_ms_per_frame": float(np.median(t_ex)),
            "build_s": build_s,
        }
        row["compression_ratio"] = fp32 / row["bytes"]
        row["speedup_vs_exact"] = row["exact_search_ms_per_frame"] / row["search_ms_per_frame"]
        faiss.omp_set_num_threads(args.bulk_threads)
        row.update(auroc_change(val, index, exact, reference=reference))
        rows.append(row)
        logger.info(
            "%s %-14s %-22s %8.1f KiB %5.1fx r@1 %.3f img %.4f ms %.2f (exact %.2f)",
            dataset,
            label,
            factory,
            row["bytes"] / 1024,
            row["compression_ratio"],
            row["recall_at_1"],
            row.get("image_auroc", float("nan")),
            row["search_ms_per_frame"],
            row["exact_search_ms_per_frame"],
        )
    return rows


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the result rows."""
    head = (
        "| data | setting | factory | KiB | x fp32 | recall@1 | rel. dist err (mean/p99) | "
        "image AUROC (drop) | pixel AUROC (drop) | ms/frame (exact) |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        pix = (
            f"{r['pixel_auroc']:.4f} ({r['pixel_auroc_drop']:+.4f})" if "pixel_auroc" in r else "-"
        )
        lines.append(
            f"| {r['dataset']} | {r['setting']} | `{r['factory']}`"
            f"{'' if r['nprobe'] is None else ' nprobe=' + str(r['nprobe'])} | "
            f"{r['bytes'] / 1024:.0f} | {r['compression_ratio']:.1f} | {r['recall_at_1']:.3f} | "
            f"{r['rel_dist_error_mean']:.4f} / {r['rel_dist_error_p99']:.4f} | "
            f"{r['image_auroc']:.4f} ({r['image_auroc_drop']:+.4f}) | {pix} | "
            f"{r['search_ms_per_frame']:.2f} ({r['exact_search_ms_per_frame']:.2f}) |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """PNG: image (and pixel) AUROC against index bytes, one panel per data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in rows})
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    for ax, ds in zip(axes[0], datasets, strict=True):
        sub = [r for r in rows if r["dataset"] == ds]
        for key, marker in (("image_auroc", "o"), ("pixel_auroc", "s")):
            pts = [(r["bytes"], r[key], r["setting"]) for r in sub if key in r]
            if not pts:
                continue
            ax.scatter(
                [p[0] for p in pts], [p[1] for p in pts], marker=marker, label=key.replace("_", " ")
            )
            for x, y, text in pts:
                ax.annotate(text, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.axhline(sub[0][f"{key}_exact"] - 0.005, ls=":", lw=0.8, color="grey")
        ax.set_xscale("log")
        ax.set_xlabel("index bytes (log)")
        ax.set_ylabel("AUROC")
        ax.set_title(f"{ds}: AUROC vs index size (dotted: exact - 0.005)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the trade-off benchmark; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="mpdd,elpv")
    parser.add_argument(
        "--data-root", default=None, help="default: ../shared/datasets or $EDGEAD_DATA"
    )
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--coreset-ratio", type=float, default=0.1)
    parser.add_argument("--elpv-max-train", type=int, default=60)
    parser.add_argument("--elpv-max-test", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2, help="faiss threads of timed searches")
    parser.add_argument(
        "--bulk-threads",
        type=int,
        default=1,
        help="faiss threads of the untimed accuracy searches (1: OpenMP barriers "
        "spin badly on a busy 2-core machine)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timing rounds (median)")
    parser.add_argument("--frames", type=int, default=10, help="frames timed per round")
    parser.add_argument(
        "--settings",
        default=None,
        help="comma-separated subset of the SETTINGS labels (default: all)",
    )
    parser.add_argument("--cache-dir", default="/tmp/edgead_index_cache")
    parser.add_argument("--results-file", default=None)
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import faiss

    from edgead import __version__
    from edgead.bench import git_sha

    faiss.omp_set_num_threads(args.threads)
    rows: list[dict[str, Any]] = []
    for ds in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        rows += run_dataset(ds, load_embeddings(ds, args), args)
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    results_file = Path(args.results_file or out_dir / f"index_tradeoff-{stamp}.json")
    payload = {
        "schema_version": 1,
        "edgead_version": __version__,
        "git_sha": git_sha(ROOT),
        "detector": "patchcore",
        "bundle_sha256": None,
        "device_profile": None,
        "backend": "faiss-cpu",
        "provider_used": "faiss-cpu",
        "precision": "fp32 queries",
        "batch": 1,
        "threads": args.threads,
        "args": vars(args),
        "results": {"rows": rows},
        "versions": {
            "faiss": faiss.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
            "machine": platform.machine(),
        },
    }
    results_file.write_text(json.dumps(payload, indent=2))
    png = results_file.with_suffix(".png")
    plot(rows, png)
    table = to_markdown(rows)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    print(f"\nwrote {results_file} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
