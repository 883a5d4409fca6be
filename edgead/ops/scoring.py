"""The one scorer per post-processing kind (numpy + faiss, torch-free).

A bundle's manifest names how its graph outputs become image scores and maps (its
"postprocess" entry). The fitted model (`edgead.models`), the exporter's index measurement
(`edgead.export.index`) and the device runtime (`edgead.runtime.Detector`) all score through the
functions here, so they agree by construction.

Kinds (parsed and validated by `parse_postprocess`):
    nn_index       graph -> "embedding" (B, h*w, D); patch score = mean L2 distance to the k
                   nearest bank vectors; image score "max" (of patch scores), "top_mean" (mean
                   of the top_k patch scores), "map_max" (of the blurred map) or "reweight"
                   (PatchCore paper eq. 7); map = upsample + blur.
    map            graph -> "anomaly_map" (B, h, w); map = upsample + blur; score = map max.
    graph          graph -> "score" (B,) and optionally "anomaly_map" (B, h, w).
    csi_nn_index   graph -> rotated embeddings + norms; CSI's score (`edgead.ops.csi.csi_scores`).
    rows           graph -> "score" (B,) for tabular rows.
    window         graph -> "score" (B,) for windows of sensor rows (B, L, D).
    rows_nn_index  graph -> standardised rows; kNN / LOF scores from the index
                   (`edgead.ops.rows_nn`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edgead.errors import BundleError
from edgead.ops.postprocess import upsample_and_blur
from edgead.ops.rows_nn import check_postprocess

NN_SCORES = ("max", "map_max", "reweight", "top_mean")
#: Scores an in-graph search (`--index graph`) can give: "reweight" needs the bank at run time.
GRAPH_SCORES = ("max", "map_max", "top_mean")
IMAGE_KINDS = ("nn_index", "map", "graph", "csi_nn_index")
ROW_KINDS = ("rows", "rows_nn_index")
WINDOW_KINDS = ("window",)


class _Searcher(Protocol):
    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True, kw_only=True)
class PostProcess:
    """A validated post-processing entry; `kind` says which scorer applies."""

    kind: str
    blur_sigma: float = 0.0  # map smoothing, px at the input size
    grid: tuple[int, int] | None = None  # nn_index: the patch grid (h, w)
    k: int = 1  # nn_index / rows_nn_index: neighbours averaged per query
    score: str = "max"  # nn_index: "max" | "map_max" | "reweight" | "top_mean"
    num_neighbors: int = 1  # nn_index "reweight": support-set size b
    top_k: int = 1  # nn_index "top_mean": image score = mean of the top_k patch scores
    raw: dict[str, Any] = field(default_factory=dict)  # the manifest's entry as written

    @property
    def is_image(self) -> bool:
        """Whether this kind scores images (else tabular rows)."""
        return self.kind in IMAGE_KINDS


def _number(raw: dict[str, Any], key: str, default: float, *, integer: bool = False) -> Any:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BundleError(f"post-processing {key!r} must be a number; got {value!r}")
    if not np.isfinite(value) or value < 0 or (integer and int(value) != value):
        raise BundleError(f"post-processing {key!r} must be a finite number >= 0; got {value!r}")
    return int(value) if integer else float(value)


def parse_postprocess(raw: Any) -> PostProcess:
    """The typed `PostProcess` of a manifest's "postprocess" entry.

    Raises:
        BundleError: not a dict, unknown kind or score, or a value of the wrong type or range.
    """
    if not isinstance(raw, dict):
        raise BundleError(f"post-processing must be a JSON object; got {type(raw).__name__}")
    kind = raw.get("kind")
    if kind not in IMAGE_KINDS + ROW_KINDS + WINDOW_KINDS:
        raise BundleError(
            f"bundle post-processing kind {kind!r} is unknown to this runtime "
            f"(knows {IMAGE_KINDS + ROW_KINDS + WINDOW_KINDS}); upgrade edgead"
        )
    sigma = _number(raw, "blur_sigma", 0.0)
    if kind == "rows_nn_index":
        k, _ = check_postprocess(raw)
        return PostProcess(kind=kind, k=k, raw=dict(raw))
    if kind != "nn_index":
        return PostProcess(kind=kind, blur_sigma=sigma, raw=dict(raw))
    grid = raw.get("grid")
    if (
        not isinstance(grid, (list, tuple))
        or len(grid) != 2
        or not all(isinstance(g, int) and not isinstance(g, bool) and g > 0 for g in grid)
    ):
        raise BundleError(f"nn_index post-processing needs 'grid': [h, w] > 0; got {grid!r}")
    score = raw.get("score", "max")
    if score not in NN_SCORES:
        raise BundleError(
            f"nn_index score {score!r} is unknown to this runtime ({', '.join(NN_SCORES)})"
        )
    k = _number(raw, "k", 1, integer=True)
    neighbors = _number(raw, "num_neighbors", 1, integer=True)
    top_k = _number(raw, "top_k", 1, integer=True)
    if k < 1 or (score == "reweight" and neighbors < 2):
        raise BundleError(f"nn_index needs k >= 1 (and num_neighbors >= 2 to reweight); got {raw}")
    if not 1 <= top_k <= int(grid[0]) * int(grid[1]):
        raise BundleError(f"nn_index top_k must be in [1, h*w of the grid]; got {top_k}")
    return PostProcess(
        kind=kind,
        blur_sigma=sigma,
        grid=(int(grid[0]), int(grid[1])),
        k=k,
        score=str(score),
        num_neighbors=neighbors,
        top_k=top_k,
        raw=dict(raw),
    )


@dataclass
class ImageScores:
    """raw: float32 (B,) image scores; maps: float32 (B, H, W) at the input size or None;
    patch_distances: float32 (B, h, w) (nn_index only); search_ms: nearest-neighbour time."""

    raw: np.ndarray
    maps: np.ndarray | None
    patch_distances: np.ndarray | None = None
    search_ms: float = 0.0


def reweight_scores(
    patch_embeddings: np.ndarray,
    patch_distances: np.ndarray,
    nearest_ids: np.ndarray,
    bank: np.ndarray,
    index: _Searcher,
    num_neighbors: int,
) -> np.ndarray:
    """float32 (B,) image scores re-weighted as in the PatchCore paper (eq. 7).

    For the most anomalous patch m_test of each image, with nearest bank entry m* at distance
    s*, and N_b(m*) the `num_neighbors` bank entries nearest to m* (m* included):
    score = (1 - exp(||m_test - m*||) / sum_{m in N_b(m*)} exp(||m_test - m||)) * s*
    (the same as anomalib's `1 - softmax(distances)[0]`). Distances are L2, not squared.

    Args:
        patch_embeddings: float32 (B, P, D).
        patch_distances: float32 (B, P) L2 distances to the nearest bank entry.
        nearest_ids: int64 (B, P) bank index of that entry.
        bank: float32 (M, D), the vectors the index holds (or their re-rank copy).
        index: the nearest-neighbour index over `bank`.
        num_neighbors: support-set size b (>= 2).
    """
    rows = np.arange(patch_distances.shape[0])
    worst = np.argmax(patch_distances, axis=1)
    best_score = patch_distances[rows, worst].astype(np.float64)
    query = patch_embeddings[rows, worst]  # (B, D)
    anchor = bank[nearest_ids[rows, worst]]  # (B, D)
    n_support = min(num_neighbors, bank.shape[0])
    _, support = index.search(np.ascontiguousarray(anchor, dtype=np.float32), n_support)
    dists = np.linalg.norm(bank[support] - query[:, None, :], axis=2).astype(np.float64)
    dists -= dists.max(axis=1, keepdims=True)  # stable softmax
    soft = np.exp(dists) / np.exp(dists).sum(axis=1, keepdims=True)
    return np.asarray((1.0 - soft[:, 0]) * best_score, dtype=np.float32)


def top_mean(patch_scores: np.ndarray, top_k: int) -> np.ndarray:
    """float32 (B,): mean of the `top_k` largest of each row of (B, P) patch scores (top_k 1:
    the max). Less swayed by one noisy patch than the max; a defect covering a few patches
    still dominates."""
    n_patches = patch_scores.shape[1]
    top = np.partition(patch_scores, n_patches - top_k, axis=1)[:, n_patches - top_k :]
    return np.asarray(top.mean(axis=1, dtype=np.float64), dtype=np.float32)


#: Graph output of an in-graph exact search (`--index graph`): float32 (B, h*w, k) L2 distances.
IN_GRAPH_DISTANCES = "patch_distances"


def _from_patch_distances(
    distances: np.ndarray,
    n: int,
    post: PostProcess,
    image_hw: tuple[int, int],
    want_maps: bool,
    raw: np.ndarray | None = None,
) -> ImageScores:
    """Image scores and maps from (n*h*w, k) patch distances; `raw` given for "reweight"."""
    grid_h, grid_w = post.grid  # type: ignore[misc]
    flat = (distances.mean(axis=1) if distances.shape[1] > 1 else distances[:, 0]).reshape(n, -1)
    patch = flat.reshape(n, grid_h, grid_w).astype(np.float32)
    maps = None
    if want_maps or post.score == "map_max":
        maps = upsample_and_blur(patch, image_hw, post.blur_sigma)
    if post.score == "max":
        raw = flat.max(axis=1)
    elif post.score == "top_mean":
        raw = top_mean(flat, post.top_k)
    elif post.score == "map_max":
        raw = maps.reshape(n, -1).max(axis=1)  # type: ignore[union-attr]
    return ImageScores(raw=np.asarray(raw, dtype=np.float32), maps=maps, patch_distances=patch)


def score_nn_embeddings(
    embeddings: np.ndarray,
    index: _Searcher,
    post: PostProcess,
    image_hw: tuple[int, int],
    bank: np.ndarray | None = None,
    want_maps: bool = True,
) -> ImageScores:
    """Kind "nn_index": scores and maps of patch embeddings searched in `index`.

    Args:
        embeddings: float32 (B, h*w, D), the graph's "embedding" output.
        index: the memory bank's nearest-neighbour index (exact or compressed).
        post: a parsed "nn_index" `PostProcess`.
        image_hw: (H, W) px of the graph input (the map's size).
        bank: float32 (M, D) vectors of `index`; needed for score "reweight" only.
        want_maps: False skips the map unless the score needs it ("map_max").

    Raises:
        BundleError: "reweight" without `bank`, or embeddings that do not fit the grid.
    """
    if post.grid is None:
        raise BundleError("nn_index post-processing has no grid")
    grid_h, grid_w = post.grid
    n = int(embeddings.shape[0])
    patches = np.ascontiguousarray(embeddings, dtype=np.float32).reshape(n, grid_h * grid_w, -1)
    t0 = time.perf_counter()
    distances, ids = index.search(patches.reshape(n * grid_h * grid_w, -1), post.k)
    raw = None
    if post.score == "reweight":
        if bank is None:
            raise BundleError("nn_index score 'reweight' needs the bank vectors")
        flat = (distances.mean(axis=1) if post.k > 1 else distances[:, 0]).reshape(n, -1)
        nearest = ids[:, 0].reshape(n, -1)
        raw = reweight_scores(patches, flat, nearest, bank, index, post.num_neighbors)
    search_ms = (time.perf_counter() - t0) * 1e3
    scored = _from_patch_distances(distances, n, post, image_hw, want_maps, raw)
    scored.search_ms = search_ms
    return scored


def score_nn_distances(
    distances: np.ndarray, post: PostProcess, image_hw: tuple[int, int], want_maps: bool = True
) -> ImageScores:
    """Kind "nn_index" searched inside the graph (`--index graph`): scores and maps from the
    graph's float32 (B, h*w, k) L2 distances, exactly as `score_nn_embeddings` makes them.

    Raises:
        BundleError: score "reweight" (it needs the bank at run time) or no grid.
    """
    if post.grid is None or post.score == "reweight":
        raise BundleError(
            "in-graph search supports the scores 'max', 'top_mean' and 'map_max' with a grid"
        )
    n = int(distances.shape[0])
    flat = np.asarray(distances, dtype=np.float32).reshape(n * post.grid[0] * post.grid[1], -1)
    return _from_patch_distances(flat, n, post, image_hw, want_maps)


def score_map_output(
    anomaly_map: np.ndarray, post: PostProcess, image_hw: tuple[int, int]
) -> ImageScores:
    """Kind "map": map = upsample + blur of the graph's (B, h, w) map; score = its max."""
    n = int(anomaly_map.shape[0])
    grid = np.asarray(anomaly_map, dtype=np.float32).reshape(n, *anomaly_map.shape[-2:])
    maps = upsample_and_blur(grid, image_hw, post.blur_sigma)
    return ImageScores(raw=maps.reshape(n, -1).max(axis=1).astype(np.float32), maps=maps)


def score_graph_output(
    score: np.ndarray,
    anomaly_map: np.ndarray | None,
    post: PostProcess,
    image_hw: tuple[int, int],
    want_maps: bool = True,
) -> ImageScores:
    """Kind "graph": the graph's own (B,) score; its map (if any, and wanted) upsampled and
    blurred."""
    n = int(np.asarray(score).shape[0])
    raw = np.asarray(score, dtype=np.float32).reshape(n)
    if anomaly_map is None or not want_maps:
        return ImageScores(raw=raw, maps=None)
    grid = np.asarray(anomaly_map, dtype=np.float32).reshape(n, *anomaly_map.shape[-2:])
    same = grid.shape[1:] == tuple(image_hw) and post.blur_sigma == 0
    maps = grid if same else upsample_and_blur(grid, image_hw, post.blur_sigma)
    return ImageScores(raw=raw, maps=maps)
