"""Compressed nearest-neighbour indexes for memory banks: options, building, measuring.

`edgead export ... --index NAME [--index-dim N] [--index-rerank R]` maps NAME and the bank's shape
(M vectors of D floats) to a faiss index_factory string (`resolve_factory`); `build_index` trains
it, measures it against exact search on validation embeddings, enforces `--max-auroc-drop`
(or, with `--index auto`, walks `AUTO_LADDER` from coarse to fine) and returns the bundle member
bytes, the manifest `IndexSpec`, a JSON report and any extra bundle arrays (the fp16 re-rank copy).

Index names (d = index_dim if given, else D; m = a divisor of d):

    flat   "Flat"                   exact fp32 (reference), 4*d bytes/vector
    fp16   "SQfp16"                 2*d bytes/vector
    sq8    "SQ8"                    int8 scalar quantisation, d bytes/vector
    pq     "PQ{d/4}np"              8-bit product quantisation, d/4 bytes/vector ("np": no
                                    polysemous training, which took minutes and is unused here)
    pq4    "PQ{d/2}x4fs"            4-bit PQ with SIMD fast scan, d/4 bytes/vector (fast)
    ivfpq  "IVF{4*sqrt(M)},PQ{d/4}np" inverted file, nprobe = nlist/8 (large banks)
    hnsw   "HNSW16,SQ8"             graph search over int8 codes (+128 link bytes/vector)
    auto   DEFAULT_INDEX, then finer entries of AUTO_LADDER until the AUROC drop is small enough
    other  any faiss index_factory string, used as given (e.g. "PCA64,PQ16")

`--index-dim N` prefixes "PCA{N}," (fitted at export; `reduce="rr"` gives a random rotation /
projection "RR{N},") so the reduction lives inside the faiss file.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgead.bundle import IndexSpec
from edgead.config import from_dict
from edgead.errors import ConfigError, DataError, EdgeadError, ExportError
from edgead.ops.nn_index import FaissIndex, Searcher
from edgead.ops.scoring import parse_postprocess, score_nn_embeddings

logger = logging.getLogger(__name__)

INDEX_FILE = "memory_bank.faiss"
RERANK_ARRAY = "memory_bank_fp16"
INDEX_NAMES = ("flat", "fp16", "sq8", "pq", "pq4", "ivfpq", "hnsw", "auto")
#: The compressed default (>= 8x smaller than fp32; see benchmarks/README.md for the measurements).
DEFAULT_INDEX = "pq4"
#: `auto` tries these from coarse to fine and keeps the first within --max-auroc-drop.
AUTO_LADDER = ("pq4", "pq", "sq8", "fp16", "flat")
FRAME_PATCHES = 784  # 28 x 28 patch grid of a 224 px frame


@dataclass(frozen=True, kw_only=True)
class IndexOptions:
    """How to turn a memory bank into the bundle's index (`--index`, `--index-dim`, ...).

    index: a name from INDEX_NAMES or a raw faiss index_factory string.
    index_dim: reduce vectors to this many dims inside the index (PCA or random rotation).
    reduce: "pca" or "rr" (random rotation / projection), used with index_dim.
    rerank: 0, or re-rank the top-R candidates exactly against an fp16 copy of the bank.
    nprobe: IVF lists visited per query (None: nlist / 8 for names; faiss's 1 for raw strings).
    k: neighbours per patch (averaged by the runtime).
    max_auroc_drop: largest image (and pixel) AUROC loss vs exact search that export accepts.
    seed: seed of the index training (k-means, PCA).
    """

    index: str = DEFAULT_INDEX
    index_dim: int | None = None
    reduce: str = "pca"
    rerank: int = 0
    nprobe: int | None = None
    k: int = 1
    max_auroc_drop: float = 0.005
    seed: int = 0

    def validate(self) -> None:
        """Raise ConfigError for values out of range."""
        if self.reduce not in ("pca", "rr"):
            raise ConfigError(f"index reduce {self.reduce!r} is unknown; use 'pca' or 'rr'")
        if self.index_dim is not None and self.index_dim < 1:
            raise ConfigError(f"--index-dim must be >= 1; got {self.index_dim}")
        if self.rerank < 0 or self.k < 1 or (self.nprobe is not None and self.nprobe < 1):
            raise ConfigError(
                f"index rerank must be >= 0, k >= 1, nprobe >= 1; got rerank="
                f"{self.rerank}, k={self.k}, nprobe={self.nprobe}"
            )
        if not 0.0 <= self.max_auroc_drop <= 1.0:
            raise ConfigError(f"--max-auroc-drop must be in [0, 1]; got {self.max_auroc_drop}")

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None) -> IndexOptions:
        """Options from a dict (CLI / TOML); ConfigError names an unknown key."""
        return from_dict(cls, dict(data or {}))


@dataclass
class IndexValidation:
    """Validation images as patch embeddings, to measure an index as the runtime would use it.

    embeddings: float32 (N_img, h*w, D), the graph's "embedding" output for N_img images.
    labels: int (N_img,), 1 = anomalous; None or a single class skips image AUROC.
    masks: bool (N_img, S, S) ground truth at the input size, or None (skips pixel AUROC).
    grid: (h, w) patch grid; image_size: (S, S) px; blur_sigma: map smoothing in px;
    score / num_neighbors / top_k: the image score of the shipped post-processing ("max",
    "map_max", "reweight", "top_mean"), so the index is measured on the score the bundle will give.
    """

    embeddings: np.ndarray
    labels: np.ndarray | None = None
    masks: np.ndarray | None = None
    grid: tuple[int, int] = (28, 28)
    image_size: tuple[int, int] = (224, 224)
    blur_sigma: float = 4.0
    score: str = "max"
    num_neighbors: int = 1
    top_k: int = 1

    def __post_init__(self) -> None:
        self.embeddings = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        n_img = len(self.embeddings)
        if self.embeddings.ndim != 3 or self.embeddings.shape[1] != self.grid[0] * self.grid[1]:
            raise DataError(
                f"validation embeddings must be (N_img, h*w={self.grid[0]}*"
                f"{self.grid[1]}, D); got {self.embeddings.shape}"
            )
        if self.labels is not None and np.asarray(self.labels).shape != (n_img,):
            raise DataError(f"validation labels must be ({n_img},); got {np.shape(self.labels)}")
        if self.masks is not None and np.shape(self.masks) != (n_img, *self.image_size):
            raise DataError(
                f"validation masks must be ({n_img}, {self.image_size[0]}, "
                f"{self.image_size[1]}); got {np.shape(self.masks)}"
            )


@dataclass
class IndexBuild:
    """What `build_index` hands the exporter: member bytes, manifest spec, report, arrays."""

    data: bytes
    spec: IndexSpec
    report: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # bundle arrays (rerank copy)
    index: FaissIndex | None = None


def _divisor_at_most(d: int, target: int) -> int:
    """Largest divisor of d that is <= target (>= 1)."""
    for m in range(max(1, min(d, target)), 0, -1):
        if d % m == 0:
            return m
    return 1


def resolve_factory(
    name: str, dim: int, n_vectors: int, *, index_dim: int | None = None, reduce: str = "pca"
) -> tuple[str, int | None]:
    """(faiss factory string, nprobe or None) for an index name and a bank of M x D.

    Args:
        name: one of INDEX_NAMES except "auto", or a raw faiss factory string (returned as is,
            after the reduction prefix when index_dim is given).
        dim: D of the bank vectors. n_vectors: M.
        index_dim: reduce to this many dims first (PCA / random rotation), <= D.

    Raises:
        ConfigError: index_dim > D, or "auto" (resolve its ladder entries instead).
    """
    if index_dim is not None and index_dim > dim:
        raise ConfigError(f"--index-dim {index_dim} exceeds the embedding dimension {dim}")
    d = index_dim or dim
    prefix = (
        ""
        if index_dim is None or index_dim == dim and reduce == "pca"
        else (f"{'PCA' if reduce == 'pca' else 'RR'}{index_dim},")
    )
    nprobe: int | None = None
    key = name.strip().lower()
    if key == "auto":
        raise ConfigError("'auto' is a search over AUTO_LADDER, not one index; resolve its entries")
    if key == "flat":
        body = "Flat"
    elif key == "fp16":
        body = "SQfp16"
    elif key == "sq8":
        body = "SQ8"
    elif key == "pq":
        body = f"PQ{_divisor_at_most(d, max(1, d // 4))}np"
    elif key == "pq4":
        body = f"PQ{_divisor_at_most(d, max(1, d // 2))}x4fs"
    elif key == "ivfpq":
        nlist = max(1, min(int(round(4 * math.sqrt(n_vectors))), n_vectors // 39 or 1))
        nprobe = max(1, nlist // 8)
        body = f"IVF{nlist},PQ{_divisor_at_most(d, max(1, d // 4))}np"
    elif key == "hnsw":
        body = "HNSW16,SQ8"
    else:
        body = name.strip()  # a raw faiss factory string
    return prefix + body, nprobe


def _fp32_bytes(bank: np.ndarray) -> int:
    return int(bank.shape[0]) * int(bank.shape[1]) * 4


def time_search(
    searcher: Searcher,
    queries: np.ndarray,
    k: int = 1,
    *,
    frame_patches: int = FRAME_PATCHES,
    max_frames: int = 10,
) -> float:
    """Median ms of one frame's search (batch 1 = `frame_patches` queries), after one warm-up.

    Args:
        queries: float32 (N, D); split into frames of `frame_patches` rows (at most max_frames).
    """
    frames = [queries[i : i + frame_patches] for i in range(0, len(queries), frame_patches)]
    frames = [f for f in frames if len(f) == frame_patches] or frames[:1]
    frames = frames[:max_frames]
    searcher.search(frames[0], k)  # warm-up
    times = []
    for frame in frames:
        t0 = time.perf_counter()
        searcher.search(frame, k)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def index_nbytes(index: FaissIndex) -> int:
    """Bytes the index adds to a bundle: faiss file plus the fp16 re-rank copy, if any."""
    extra = 0 if index.rerank_bank is None else int(index.rerank_bank.nbytes)
    return len(index.to_bytes()) + extra


def measure_index(
    bank: np.ndarray,
    queries: np.ndarray,
    index: FaissIndex,
    exact: Searcher,
    *,
    k: int = 1,
    frame_patches: int = FRAME_PATCHES,
) -> dict[str, float]:
    """Accuracy, size and speed of `index` against exact search on `queries`.

    Args:
        bank: float32 (M, D) the index was built from (for the fp32 size).
        queries: float32 (N, D) validation patch embeddings.
        index: the candidate index. exact: an exact searcher over the same bank ("Flat").

    Returns:
        {"recall_at_1": fraction of queries whose nearest id matches exact search,
         "rel_dist_error_mean", "rel_dist_error_p99": |d - d_exact| / d_exact of the nearest
         distance (L2), "dist_ratio_median": median d / d_exact (how raw scores shift),
         "bytes": bundle bytes of the index, "compression_ratio": fp32 bank bytes /
         bytes, "search_ms_per_frame", "exact_search_ms_per_frame": median ms per frame of
         `frame_patches` queries (faiss threads as set by the caller)}.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    d_exact, i_exact = exact.search(queries, k)
    d_approx, i_approx = index.search(queries, k)
    recall = float(np.mean(i_approx[:, 0] == i_exact[:, 0]))
    nearest = d_exact[:, 0].astype(np.float64)
    rel = np.abs(d_approx[:, 0] - nearest) / np.maximum(nearest, 1e-12)
    rel = np.where(np.isfinite(rel), rel, 1.0)
    nbytes = index_nbytes(index)
    return {
        "recall_at_1": recall,
        "rel_dist_error_mean": float(rel.mean()),
        "rel_dist_error_p99": float(np.percentile(rel, 99)),
        # raw scores scale by about this factor: thresholds fitted with exact search need it
        "dist_ratio_median": float(np.median(d_approx[:, 0] / np.maximum(nearest, 1e-12))),
        "bytes": nbytes,
        "compression_ratio": _fp32_bytes(bank) / nbytes,
        "search_ms_per_frame": time_search(index, queries, k, frame_patches=frame_patches),
        "exact_search_ms_per_frame": time_search(exact, queries, k, frame_patches=frame_patches),
    }


def score_images(
    validation: IndexValidation, searcher: Searcher, k: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """(image scores float32 (N_img,), maps float32 (N_img, S, S)) from the runtime's own
    "nn_index" scorer (`edgead.ops.scoring.score_nn_embeddings`), searching `searcher`.

    With score "reweight" the support sets come from `searcher`'s own vectors (as the runtime
    reconstructs them from the shipped index)."""
    post = parse_postprocess(
        {
            "kind": "nn_index",
            "grid": list(validation.grid),
            "k": int(k),
            "blur_sigma": float(validation.blur_sigma),
            "score": validation.score,
            "num_neighbors": int(validation.num_neighbors),
            "top_k": int(validation.top_k),
        }
    )
    bank = None
    if post.score == "reweight":
        reconstruct = getattr(searcher, "reconstruct_all", None)
        if reconstruct is None:
            raise ExportError("scoring 'reweight' needs an index that can return its vectors")
        bank = reconstruct()
    scored = score_nn_embeddings(validation.embeddings, searcher, post, validation.image_size, bank)
    return scored.raw, scored.maps  # type: ignore[return-value]


def auroc_with(validation: IndexValidation, searcher: Searcher, k: int = 1) -> dict[str, float]:
    """{"image_auroc", "pixel_auroc"} of scoring `validation` with `searcher` (absent if not
    measurable: single-class labels, no masks)."""
    from edgead.metrics import image_metrics, pixel_metrics

    scores, maps = score_images(validation, searcher, k)
    out: dict[str, float] = {}
    labels = None if validation.labels is None else np.asarray(validation.labels).astype(int)
    if labels is not None and len(np.unique(labels)) == 2:
        out["image_auroc"] = float(image_metrics(labels, scores)["auroc"])
    masks = validation.masks
    if masks is not None and np.any(masks) and not np.all(masks):
        pixel = pixel_metrics(np.asarray(masks, dtype=bool), maps)
        out["pixel_auroc"] = float(pixel["pixel_auroc"])
    return out


def auroc_change(
    validation: IndexValidation,
    index: Searcher,
    exact: Searcher,
    k: int = 1,
    *,
    reference: dict[str, float] | None = None,
) -> dict[str, float]:
    """Image / pixel AUROC with exact and with compressed search, and the drop (exact - index).

    Args:
        reference: `auroc_with(validation, exact, k)` computed once by the caller (saves one
            exact search per candidate); None computes it here.

    Returns:
        {"image_auroc_exact", "image_auroc", "image_auroc_drop", and the same for pixel_} for
        what is measurable (see `auroc_with`); positive drops mean the index loses accuracy.
    """
    ref = reference if reference is not None else auroc_with(validation, exact, k)
    got = auroc_with(validation, index, k)
    out: dict[str, float] = {}
    for key in ("image_auroc", "pixel_auroc"):
        if key in ref:
            out[f"{key}_exact"] = ref[key]
            out[key] = got[key]
            out[f"{key}_drop"] = ref[key] - got[key]
    return out


def _validation_queries(
    bank: np.ndarray, validation: IndexValidation | None, seed: int
) -> tuple[np.ndarray, str]:
    """Query vectors for measuring: validation patches, else bank rows with small noise."""
    if validation is not None:
        return validation.embeddings.reshape(-1, validation.embeddings.shape[-1]), "validation"
    rng = np.random.default_rng(seed)
    rows = bank[rng.choice(len(bank), size=min(len(bank), 4 * FRAME_PATCHES), replace=False)]
    scale = 0.1 * float(np.std(bank))
    return (rows + rng.normal(scale=scale, size=rows.shape)).astype(np.float32), "bank+noise"


def _try_one(
    bank: np.ndarray,
    name: str,
    options: IndexOptions,
    exact: FaissIndex,
    queries: np.ndarray,
    validation: IndexValidation | None,
    reference: dict[str, float] | None,
) -> tuple[FaissIndex, dict[str, Any]]:
    """Build and measure one candidate; the report includes AUROC changes when measurable."""
    factory, nprobe = resolve_factory(
        name, bank.shape[1], bank.shape[0], index_dim=options.index_dim, reduce=options.reduce
    )
    nprobe = options.nprobe if options.nprobe is not None else nprobe
    t0 = time.perf_counter()
    try:
        index = FaissIndex.build(
            bank, factory, seed=options.seed, nprobe=nprobe, rerank=options.rerank
        )
    except RuntimeError as exc:  # faiss rejects the factory string or its sizes
        raise ExportError(
            f"faiss cannot build index {factory!r} for a {bank.shape[0]} x "
            f"{bank.shape[1]} bank: {str(exc).splitlines()[0][:300]}; pick another "
            f"--index ({', '.join(INDEX_NAMES)}) or a valid factory string"
        ) from exc
    except EdgeadError as exc:
        raise ExportError(f"index {factory!r}: {exc}") from exc
    build_s = time.perf_counter() - t0
    report: dict[str, Any] = {
        "name": name,
        "factory": factory,
        "nprobe": nprobe,
        "rerank": options.rerank,
        "build_s": round(build_s, 3),
    }
    report.update(measure_index(bank, queries, index, exact, k=options.k))
    if validation is not None:
        report.update(auroc_change(validation, index, exact, k=options.k, reference=reference))
    return index, report


def _too_lossy(report: dict[str, Any], max_drop: float) -> str | None:
    """A reason string when an AUROC drop exceeds `max_drop`, else None."""
    for key in ("image_auroc_drop", "pixel_auroc_drop"):
        if key in report and report[key] > max_drop:
            return f"{key.replace('_drop', '')} drops by {report[key]:.4f} (> {max_drop})"
    return None


def build_index(
    bank: np.ndarray,
    options: IndexOptions | dict[str, Any] | None = None,
    *,
    validation: IndexValidation | None = None,
) -> IndexBuild:
    """Build the bundle's index for a memory bank, measure it, and enforce the AUROC budget.

    Args:
        bank: float32 (M, D) memory bank in the units of the graph's "embedding" output.
        options: IndexOptions (or a dict of them); None uses the compressed default.
        validation: embeddings (+ labels, masks) of validation images; None measures recall and
            distance error on noisy bank rows only and cannot check the AUROC budget (logged).

    Returns:
        IndexBuild: faiss bytes for `INDEX_FILE`, the IndexSpec, the report (written to the
        manifest's export info: chosen factory, measurements, the candidates `auto` tried) and
        arrays ({RERANK_ARRAY: float16 (M, D)} when rerank > 0).

    Raises:
        ExportError: bad bank, faiss cannot build the index, or the AUROC drop exceeds
            `max_auroc_drop` (for `auto`: even the finest ladder entry did).
    """
    opts = options if isinstance(options, IndexOptions) else IndexOptions.from_mapping(options)
    opts.validate()
    bank = np.ascontiguousarray(bank, dtype=np.float32)
    if bank.ndim != 2 or len(bank) == 0 or not np.isfinite(bank).all():
        raise ExportError(
            f"memory bank must be a finite float (M, D) array; got shape {bank.shape}"
        )
    if opts.k > len(bank):
        raise ExportError(f"k={opts.k} neighbours but the bank has {len(bank)} vectors")
    if validation is not None and validation.embeddings.shape[-1] != bank.shape[1]:
        raise ExportError(
            f"validation embeddings are {validation.embeddings.shape[-1]}-d; the "
            f"bank is {bank.shape[1]}-d"
        )
    exact = FaissIndex.build(bank, "Flat")
    queries, source = _validation_queries(bank, validation, opts.seed)
    auto = opts.index.strip().lower() == "auto"
    names = AUTO_LADDER if auto else (opts.index,)
    tried: list[dict[str, Any]] = []
    chosen: tuple[FaissIndex, dict[str, Any]] | None = None
    reference = None if validation is None else auroc_with(validation, exact, opts.k)
    for name in names:
        index, report = _try_one(bank, name, opts, exact, queries, validation, reference)
        reason = _too_lossy(report, opts.max_auroc_drop)
        report["rejected"] = reason
        tried.append(report)
        if reason is None:
            chosen = (index, report)
            break
        logger.warning("index %s (%s): %s", name, report["factory"], reason)
    if chosen is None:
        last = tried[-1]
        hint = (
            "none of the auto ladder passed"
            if auto
            else "use --index auto, a finer --index (sq8, fp16, flat), --index-rerank 32, "
            "or a larger --max-auroc-drop"
        )
        raise ExportError(
            f"index {last['factory']!r}: {last['rejected']} vs exact search on "
            f"{source} data; {hint}"
        )
    index, report = chosen
    if validation is None or not any(k.endswith("_drop") for k in report):
        logger.warning(
            "index %s: AUROC change not measured (no labelled validation images); "
            "only recall and distance error were checked",
            report["factory"],
        )
    data = index.to_bytes()
    arrays: dict[str, np.ndarray] = {}
    if index.rerank_bank is not None:
        arrays[RERANK_ARRAY] = index.rerank_bank
    spec = IndexSpec(
        file=INDEX_FILE,
        factory=index.factory,
        metric="l2",
        dim=int(bank.shape[1]),
        n_vectors=int(bank.shape[0]),
        nprobe=index.nprobe,
        k=opts.k,
        rerank=opts.rerank,
        rerank_array=RERANK_ARRAY if arrays else None,
    )
    full = {
        **report,
        "n_vectors": spec.n_vectors,
        "dim": spec.dim,
        "fp32_bytes": _fp32_bytes(bank),
        "measured_on": source,
        "n_queries": int(len(queries)),
        "max_auroc_drop": opts.max_auroc_drop,
        "options": dataclasses.asdict(opts),
        "faiss_threads": _faiss_threads(),
    }
    if auto:
        full["auto_tried"] = [{k: t[k] for k in ("name", "factory", "rejected")} for t in tried]
    logger.info(
        "index %s: %d x %d, %.2f MiB (%.1fx smaller than fp32), recall@1 %.3f",
        index.factory,
        spec.n_vectors,
        spec.dim,
        full["bytes"] / 2**20,
        full["compression_ratio"],
        full["recall_at_1"],
    )
    return IndexBuild(data=data, spec=spec, report=full, arrays=arrays, index=index)


def build_index_member(
    bank: np.ndarray,
    options: dict[str, Any] | None = None,
    *,
    validation: IndexValidation | None = None,
) -> tuple[bytes, IndexSpec, dict[str, Any]]:
    """(faiss bytes, IndexSpec, report): `build_index` for exporters that write no extra arrays.

    Raises:
        ExportError: as `build_index`, and when rerank > 0 (its fp16 array must be written to the
            bundle: call `build_index` and add `IndexBuild.arrays`).
    """
    result = build_index(bank, options, validation=validation)
    if result.arrays:
        raise ExportError(
            "index re-ranking needs its fp16 bank copy written as a bundle array; "
            "this exporter does not write index arrays (use build_index)"
        )
    return result.data, result.spec, result.report


def _faiss_threads() -> int:
    import faiss

    return int(faiss.omp_get_max_threads())


#: An embedder maps uint8 (B, S, S, 3) images to float32 (B, h*w, D) (the graph's "embedding").
Embedder = Callable[[np.ndarray], np.ndarray]


def validation_from_images(
    embed: Embedder,
    images: np.ndarray,
    labels: np.ndarray | None,
    masks: np.ndarray | None,
    postprocess: dict[str, Any],
    batch: int = 8,
) -> IndexValidation:
    """IndexValidation from validation images run through the export module's embedder.

    Args:
        embed: e.g. `lambda x: module(torch.from_numpy(x))[0].numpy()` for an ExportSpec module.
        images: uint8 (N, S, S, 3) resized like training images.
        postprocess: the ExportSpec's {"kind": "nn_index", "grid": [h, w], "blur_sigma": ...}.
    """
    parts = [
        np.asarray(embed(images[i : i + batch]), dtype=np.float32)
        for i in range(0, len(images), batch)
    ]
    grid = (int(postprocess["grid"][0]), int(postprocess["grid"][1]))
    emb = np.concatenate(parts).reshape(len(images), grid[0] * grid[1], -1)
    return IndexValidation(
        embeddings=emb,
        labels=labels,
        masks=masks,
        grid=grid,
        image_size=(int(images.shape[1]), int(images.shape[2])),
        blur_sigma=float(postprocess.get("blur_sigma", 4.0)),
        score=str(postprocess.get("score", "max")),
        num_neighbors=int(postprocess.get("num_neighbors", 1)),
        top_k=int(postprocess.get("top_k", 1)),
    )
