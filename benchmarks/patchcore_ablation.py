"""PatchCore ablation: each factor alone against a baseline, seed-averaged, on real data.

    .venv/bin/python benchmarks/patchcore_ablation.py --datasets elpv,mpdd,gray --seeds 0,1,2

Factors (each changed alone; the baseline is `--baseline`, by default edgead's settings before
issue 12: area resize to uint8, 10 % of the normals held out of the bank, Gaussian projection to
128-d in the coreset, image score = max patch distance):

- preprocessing of train and test images: `area_u8` (OpenCV area, uint8), `auto_u8` (per axis:
  area when shrinking, bilinear when enlarging, uint8), `pil_u8` (OpenCV decode, Pillow's
  antialiased bilinear resize, uint8), `torch_f32` (anomalib's path: Pillow
  decode, torchvision antialiased bilinear on float, no rounding), `torch_u8` (the same, rounded
  to uint8), `imagenet` (area uint8, but ImageNet mean/std instead of the backbone's 0.5/0.5);
- bank: `holdout` (10 % of the training images left out, as `edgead train` did) or `all`;
  coreset projection `gauss128`, `none` (exact distances) or `sparse_jl` (anomalib's sklearn
  SparseRandomProjection with eps=0.9);
- image score: `max`, `reweight9` (the paper's re-weighting, anomalib's default), `top3` (mean
  of the 3 largest patch distances); the map blur sigma (pixel metrics only).

Embeddings are computed once per data set and preprocessing and cached in
benchmarks/results/ablation_cache/ (git-ignored); every bank and score variant then runs its own
coreset and search. Prints a Markdown table of mean +- std over seeds (and the change against
the baseline) and writes benchmarks/results/patchcore_ablation-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

SCHEMA_VERSION = 1
REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "benchmarks" / "results"
CACHE_DIR = OUT_DIR / "ablation_cache"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREPS = ("area_u8", "auto_u8", "pil_u8", "torch_f32", "torch_u8", "imagenet")
BANKS = ("holdout", "all")
PROJECTIONS = ("gauss128", "none", "sparse_jl")
SCORES = ("max", "reweight9", "top3")
HOLDOUT_FRACTION = 0.1
log = logging.getLogger("patchcore_ablation")


def dataset_spec(name: str, gray_dir: Path) -> tuple[str, dict[str, Any]]:
    """(edgead data spec, loader options) of a named data set (or a folder path)."""
    if name == "elpv":
        return "elpv", {"train_fraction": 0.66}  # the large split: ~1,000 training cells
    if name == "mpdd":
        env = os.environ.get("EDGEAD_DATA")
        root = Path(env) if env else REPO.parent / "shared" / "datasets"
        return str(root / "mpdd_metal_plate"), {}
    if name == "gray":
        return str(gray_dir), {}
    return name, {}


# ----------------------------------------------------------------------------- preprocessing


def resize_auto(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (S, S, C): per axis, OpenCV area when shrinking and bilinear when enlarging."""
    height, width = image.shape[:2]
    if height > size:
        image = cv2.resize(image, (width, size), interpolation=cv2.INTER_AREA)
    if width > size:
        image = cv2.resize(image, (size, image.shape[0]), interpolation=cv2.INTER_AREA)
    if image.shape[:2] != (size, size):
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    return image


def resize_pil(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (S, S, 3): Pillow's antialiased bilinear resize of an OpenCV-decoded image."""
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def torch_resize(path: Path, size: int, rounded: bool) -> np.ndarray:
    """float32 (S, S, 3) on 0..255 as anomalib reads it: Pillow RGB, antialiased bilinear."""
    import torch
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    out = TF.resize(tensor, [size, size], antialias=True).clamp(0, 1).permute(1, 2, 0) * 255.0
    out_np = out.numpy()
    return np.floor(out_np + 0.5).astype(np.uint8) if rounded else out_np.astype(np.float32)


def loader(prep: str, size: int) -> Callable[[Path], np.ndarray]:
    """path -> (S, S, 3) image (uint8, or float32 on 0..255 for torch_f32)."""
    from edgead.data.base import load_resized
    from edgead.ops.decode import read_image

    if prep in ("area_u8", "imagenet"):
        return lambda path: load_resized(path, size, "area")
    if prep == "auto_u8":
        return lambda path: resize_auto(read_image(path), size)
    if prep == "pil_u8":
        return lambda path: resize_pil(read_image(path), size)
    if prep in ("torch_f32", "torch_u8"):
        return lambda path: torch_resize(path, size, rounded=prep == "torch_u8")
    raise SystemExit(f"unknown preprocessing {prep!r}; use one of {PREPS}")


def embed_paths(paths: list[Path], prep: str, size: int, batch: int = 16) -> np.ndarray:
    """float32 (N, h*w, D) PatchCore embeddings of the files, through edgead's embedder."""
    import torch

    from edgead.models._image_common import UInt8Normalize
    from edgead.models.base import create_detector

    det = create_detector("patchcore", {"image_size": size})
    if prep == "imagenet":
        det.embedder.normalize = UInt8Normalize(IMAGENET_MEAN, IMAGENET_STD)
    load = loader(prep, size)
    parts = []
    with torch.inference_mode():
        for start in range(0, len(paths), batch):
            images = np.stack([load(p) for p in paths[start : start + batch]])
            if images.dtype == np.uint8 and prep != "imagenet":
                parts.append(det.embed(images))  # edgead's engine (ONNX Runtime, checked)
            else:  # float input or a swapped normalisation: the torch module itself
                parts.append(det.embedder(torch.from_numpy(images))[0].numpy())
    return np.concatenate(parts)


def cached_embeddings(
    name: str, prep: str, size: int, paths: list[Path], split: str
) -> tuple[np.ndarray, float]:
    """(embeddings, seconds) from the cache or computed now."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    file = CACHE_DIR / f"{Path(name).name}_{prep}_{size}_{split}.npy"
    if file.is_file():
        cached = np.load(file)
        if cached.shape[0] == len(paths):
            return cached, float("nan")
    t0 = time.perf_counter()
    emb = embed_paths(paths, prep, size)
    seconds = time.perf_counter() - t0
    np.save(file, emb)
    log.info("%s %s %s: %d images embedded in %.1f s", name, prep, split, len(paths), seconds)
    return emb, seconds


# ------------------------------------------------------------------------------------ banks


def project(features: np.ndarray, projection: str, seed: int) -> tuple[np.ndarray, int]:
    """(vectors the coreset measures distances on, projection_dim for greedy_coreset)."""
    if projection == "gauss128":
        return features, 128
    if projection == "none":
        return features, 0
    if projection == "sparse_jl":
        # anomalib's SparseRandomProjection(eps=0.9): Johnson-Lindenstrauss dimension for N
        # vectors (above D here, which scikit-learn's class refuses), density 1 / sqrt(D).
        n_vectors, n_dims = features.shape
        n_components = int(4 * np.log(n_vectors) / (0.9**2 / 2 - 0.9**3 / 3))
        density = 1 / np.sqrt(n_dims)
        rng = np.random.default_rng(seed)
        signs = rng.choice(
            [-1.0, 0.0, 1.0], size=(n_dims, n_components), p=[density / 2, 1 - density, density / 2]
        )
        matrix = (signs * np.sqrt(1 / density) / np.sqrt(n_components)).astype(np.float32)
        return np.ascontiguousarray(features @ matrix), 0
    raise SystemExit(f"unknown projection {projection!r}; use one of {PROJECTIONS}")


def build_bank(
    train_emb: np.ndarray, bank: str, projection: str, ratio: float, seed: int
) -> tuple[np.ndarray, float]:
    """(memory bank float32 (M, D), coreset seconds)."""
    from edgead.models.coreset import greedy_coreset
    from edgead.training import MIN_VAL_IMAGES, holdout_split

    if bank == "holdout":
        fit_idx, _ = holdout_split(len(train_emb), HOLDOUT_FRACTION, MIN_VAL_IMAGES, seed)
        train_emb = train_emb[fit_idx]
    features = train_emb.reshape(-1, train_emb.shape[-1])
    vectors, dim = project(features, projection, seed)
    t0 = time.perf_counter()
    keep = greedy_coreset(vectors, ratio, projection_dim=dim, seed=seed)
    return np.ascontiguousarray(features[keep]), time.perf_counter() - t0


def score_all(
    test_emb: np.ndarray, bank: np.ndarray, grid: int, size: int, sigmas: list[float], masks: Any
) -> dict[str, Any]:
    """Image scores per score kind and, with masks, pixel metrics per blur sigma."""
    from edgead import metrics
    from edgead.ops.nn_index import FaissIndex
    from edgead.ops.postprocess import upsample_and_blur
    from edgead.ops.scoring import reweight_scores, top_mean

    index = FaissIndex.build(bank, "Flat")
    n_test = len(test_emb)
    out: dict[str, Any] = {kind: np.empty(n_test, np.float32) for kind in SCORES}
    maps: dict[float, list[np.ndarray]] = {s: [] for s in sigmas}
    for start in range(0, n_test, 32):
        emb = test_emb[start : start + 32]
        dists, ids = index.search(emb.reshape(-1, emb.shape[-1]), 1)
        flat = dists[:, 0].reshape(len(emb), -1)
        rows = slice(start, start + len(emb))
        out["max"][rows] = flat.max(axis=1)
        out["top3"][rows] = top_mean(flat, 3)
        ids_flat = ids[:, 0].reshape(len(emb), -1)
        out["reweight9"][rows] = reweight_scores(emb, flat, ids_flat, bank, index, 9)
        if masks is not None:
            patch = flat.reshape(len(emb), grid, grid)
            for sigma in sigmas:
                maps[sigma].append(upsample_and_blur(patch, (size, size), sigma))
    if masks is not None:
        out["pixel"] = {
            sigma: metrics.pixel_metrics(masks, np.concatenate(maps[sigma])) for sigma in sigmas
        }
    return out


# ------------------------------------------------------------------------------------- runs


def variants(baseline: dict[str, str], factors: list[str]) -> list[tuple[str, dict[str, str]]]:
    """(factor label, settings) for the baseline and each factor changed alone."""
    rows = [("baseline", dict(baseline))]
    for key, options in (("prep", PREPS), ("bank", BANKS), ("projection", PROJECTIONS)):
        if key not in factors:
            continue
        for option in options:
            if option != baseline[key]:
                rows.append((f"{key}={option}", {**baseline, key: option}))
    return rows


def run_dataset(name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Result rows (one per factor x score kind) for one data set."""
    from edgead import metrics
    from edgead.data.datasets import load_image_dataset

    spec, options = dataset_spec(name, args.gray_dir)
    dataset = load_image_dataset(spec, args.image_size, **options)
    test = dataset.test_set()
    labels = np.asarray(test.labels)
    masks = test.masks_array()
    baseline = dict(zip(("prep", "bank", "projection"), args.baseline.split(","), strict=True))
    grid = -(-args.image_size // 8)
    sigmas = [float(s) for s in args.sigmas.split(",")]
    rows = []
    for label, setting in variants(baseline, args.factors.split(",")):
        if setting["prep"] not in args.preps.split(","):
            continue
        train_emb, train_s = cached_embeddings(
            name, setting["prep"], args.image_size, list(dataset.train_paths), "train"
        )
        test_emb, _ = cached_embeddings(
            name, setting["prep"], args.image_size, list(test.paths), "test"
        )
        per_seed = []
        for seed in args.seeds:
            bank, coreset_s = build_bank(
                train_emb, setting["bank"], setting["projection"], args.coreset_ratio, seed
            )
            scored = score_all(test_emb, bank, grid, args.image_size, sigmas, masks)
            result: dict[str, Any] = {"seed": seed, "coreset_s": coreset_s, "bank": len(bank)}
            for kind in SCORES:
                result[f"auroc_{kind}"] = metrics.image_metrics(labels, scored[kind])["auroc"]
            for sigma, pix in scored.get("pixel", {}).items():
                result[f"pixel_auroc_s{sigma:g}"] = pix["pixel_auroc"]
                result[f"aupro_s{sigma:g}"] = pix["aupro"]
            per_seed.append(result)
            log.info("%s %s seed %d: %s", name, label, seed, json.dumps(result))
        rows.append(
            {
                "dataset": name,
                "factor": label,
                **setting,
                "n_train": len(train_emb),
                "n_test": len(labels),
                "embed_train_s": train_s,
                "seeds": per_seed,
            }
        )
    return rows


def _stat(row: dict[str, Any], key: str) -> tuple[float, float]:
    values = [s[key] for s in row["seeds"] if key in s]
    return (float(np.mean(values)), float(np.std(values))) if values else (float("nan"), 0.0)


def render(rows: list[dict[str, Any]], sigmas: list[float]) -> str:
    """Markdown: per data set and factor, image AUROC (max score) mean +- std and its change."""
    head = "| data | factor | image AUROC | change | reweight9 | top3 | pixel AUROC | AUPRO |"
    lines = [head, "|" + "---|" * 8]
    base: dict[str, float] = {}
    for row in rows:
        mean, std = _stat(row, "auroc_max")
        if row["factor"] == "baseline":
            base[row["dataset"]] = mean
        delta = mean - base.get(row["dataset"], mean)
        rw, _ = _stat(row, "auroc_reweight9")
        top3, _ = _stat(row, "auroc_top3")
        pix = "-"
        pro = "-"
        if f"pixel_auroc_s{sigmas[0]:g}" in row["seeds"][0]:
            pix = " / ".join(f"{_stat(row, f'pixel_auroc_s{s:g}')[0]:.3f}" for s in sigmas)
            pro = " / ".join(f"{_stat(row, f'aupro_s{s:g}')[0]:.3f}" for s in sigmas)
        lines.append(
            f"| {row['dataset']} | {row['factor']} | {mean:.4f} +- {std:.4f} | {delta:+.4f} "
            f"| {rw:.4f} | {top3:.4f} | {pix} | {pro} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the ablation, print the table, write the JSON file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="mpdd,gray,elpv")
    parser.add_argument("--gray-dir", type=Path, default=Path("/tmp/gray_jpeg_set"))
    parser.add_argument("--preps", default=",".join(PREPS))
    parser.add_argument("--baseline", default="area_u8,holdout,gauss128")
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    parser.add_argument("--factors", default="prep,bank,projection", help="factors to vary")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--coreset-ratio", type=float, default=0.01)
    parser.add_argument("--sigmas", default="4,2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results-file", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    import torch

    torch.set_num_threads(args.threads)
    from edgead import __version__
    from edgead.bench import git_sha, write_report

    load_before = list(os.getloadavg())
    rows: list[dict[str, Any]] = []
    for name in [d for d in args.datasets.split(",") if d]:
        rows.extend(run_dataset(name, args))
        print(render(rows, [float(s) for s in args.sigmas.split(",")]), flush=True)
    table = render(rows, [float(s) for s in args.sigmas.split(",")])
    report = {
        "schema_version": SCHEMA_VERSION,
        "edgead_version": __version__,
        "git_sha": git_sha(REPO),
        "detector": "patchcore",
        "image_size": args.image_size,
        "coreset_ratio": args.coreset_ratio,
        "baseline": args.baseline,
        "host": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": args.threads,
        "load_avg_before": load_before,
        "load_avg_after": list(os.getloadavg()),
        "results": rows,
        "table_md": table,
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
    }
    out = write_report(report, args.results_file, OUT_DIR, "patchcore_ablation")
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
