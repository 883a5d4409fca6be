"""Greedy k-center coreset selection (PatchCore's memory-bank subsampling), fast on a few cores.

The algorithm is the classic farthest-point (Gonzalez) greedy: start from a seeded random
vector, then repeatedly add the vector farthest from everything selected so far, and keep for
every vector its squared distance to the nearest selected one. Distances are exact by default;
with `projection_dim` > 0 they are measured after a seeded Gaussian random projection to that
many dimensions (Johnson-Lindenstrauss; for wide features).

Each step's work is one (N,) minimum and one argmax. The distances from all N vectors to the
next centres come from blocked matrix products: when the farthest vector is not among the
vectors of the current block, the next block is B = `block_size` likely next centres (half
what the greedy itself picks next among the 2B farthest vectors, half the farthest vectors
left; `_likely_next`), and their squared distance rows are computed with one
(B, P + 2) x (P + 2, N) product (the norms ride along as two extra rows), run by numpy's BLAS:
for these shapes about twice torch's CPU mm on the development machine. The farthest vectors
tend to stay farthest, so one pass over the data serves many steps, and the result is the same
as the plain greedy (it is exact, not an approximation). There is no Python loop over vectors.
Torch only draws the seeded first centre and projection.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from edgead.errors import ConfigError, DataError
from edgead.models.base import Progress, no_progress

logger = logging.getLogger(__name__)


@dataclass
class CoresetStats:
    """What a coreset run cost: seconds, passes over the data, vectors kept."""

    n_vectors: int = 0
    n_selected: int = 0
    n_blocks: int = 0
    seconds: float = 0.0


def coreset_size(n_vectors: int, ratio: float) -> int:
    """Number of vectors kept: round(n_vectors * ratio), at least 1 and at most n_vectors."""
    if not 0.0 < ratio <= 1.0:
        raise ConfigError(f"coreset_ratio must be in (0, 1], got {ratio}")
    return int(min(n_vectors, max(1, round(n_vectors * ratio))))


def random_projection(
    features: torch.Tensor, projection_dim: int, seed: int, chunk_rows: int = 65536
) -> torch.Tensor:
    """float32 (N, P) Gaussian random projection of `features` (N, D); `features` itself (not a
    copy: callers must not modify it) when P <= 0 or P >= D.

    Args:
        features: float32 (N, D).
        projection_dim: P, the target dimension.
        seed: seeds the projection matrix (entries N(0, 1/P), so distances are kept on average).
        chunk_rows: rows projected per product, bounding temporary memory.
    """
    n_dims = features.shape[1]
    if projection_dim <= 0 or projection_dim >= n_dims:
        return features
    gen = torch.Generator().manual_seed(seed)
    matrix = torch.randn(n_dims, projection_dim, generator=gen) / math.sqrt(projection_dim)
    out = torch.empty(features.shape[0], projection_dim, dtype=torch.float32)
    for start in range(0, features.shape[0], chunk_rows):
        torch.mm(features[start : start + chunk_rows], matrix, out=out[start : start + chunk_rows])
    return out


def _distance_rows(columns: np.ndarray, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
    """float32 (B, N) squared distances from the vectors `rows` (B,) to all N vectors, written
    into `out` (at least (B, N)) by one matrix product.

    Args:
        columns: float32 (P + 2, N) augmented columns from `_augmented_columns`: the centred
            vectors x, then |x|^2, then ones.
        rows: int64 (B,) indices of the block's centres.
        out: float32 (>= B, N) buffer, reused between blocks.
    """
    n_dims = columns.shape[0] - 2
    # |x - c|^2 = |c|^2 - 2 c.x + |x|^2 as one product: [-2c, 1, |c|^2] . [x, |x|^2, 1].
    centres = np.empty((len(rows), n_dims + 2), dtype=np.float32)
    centres[:, :n_dims] = columns[:n_dims, rows].T
    centres[:, :n_dims] *= -2.0
    centres[:, n_dims] = 1.0
    centres[:, n_dims + 1] = columns[n_dims, rows]
    block = out[: len(rows)]
    np.matmul(centres, columns, out=block)  # numpy's BLAS: ~2x torch's mm for this shape here
    return block


def _augmented_columns(vectors: np.ndarray, chunk_rows: int = 16384) -> np.ndarray:
    """float32 (D + 2, N) columns of `vectors` (N, D) centred on their mean and scaled to largest
    norm 1, then their squared norms, then ones (so one product gives squared distances), built
    in one pass of `chunk_rows` rows at a time through one reused buffer, so that no centred
    (N, D) copy exists beside the result (the input is not modified)."""
    n_vectors, n_dims = vectors.shape
    mean = vectors.mean(axis=0, dtype=np.float64).astype(np.float32)
    chunk = np.empty((min(chunk_rows, n_vectors), n_dims), dtype=np.float32)
    columns = np.empty((n_dims + 2, n_vectors), dtype=np.float32)
    sq_norms = columns[n_dims]  # a view: the row filled in place
    for start in range(0, n_vectors, chunk_rows):
        centred = chunk[: min(chunk_rows, n_vectors - start)]
        np.subtract(vectors[start : start + chunk_rows], mean, out=centred)
        columns[:n_dims, start : start + chunk_rows] = centred.T
        np.einsum("ij,ij->i", centred, centred, out=sq_norms[start : start + chunk_rows])
    scale_sq = float(sq_norms.max())
    if scale_sq > 0:  # largest norm 1: distances in [0, 4], summed in float32
        columns[:n_dims] /= np.float32(np.sqrt(scale_sq))
        sq_norms /= np.float32(scale_sq)
    columns[n_dims + 1] = 1.0
    return columns


def _projected_columns(features: np.ndarray, projection_dim: int, seed: int) -> np.ndarray:
    """float32 (P + 2, N) augmented columns (`_augmented_columns`) of the projected `features`.
    Raises DataError on NaN or infinite input.

    The (P + 2, N) layout: a block's (B, P + 2) x (P + 2, N) product gives its distance rows in
    the layout the per-step minimum reads, with no transposed copy of the (B, N) result."""
    vectors = np.ascontiguousarray(features, dtype=np.float32)
    # a float64 sum of finite float32 values cannot overflow; any NaN or inf makes it non-finite
    if not np.isfinite(vectors.sum(dtype=np.float64)):
        raise DataError("coreset input holds NaN or infinite values; check the feature extractor")
    if 0 < projection_dim < vectors.shape[1]:
        vectors = random_projection(torch.from_numpy(vectors), projection_dim, seed).numpy()
    return _augmented_columns(vectors)


#: `_likely_next` looks ahead on the POOL_FACTOR x B currently farthest vectors ...
POOL_FACTOR = 2
#: ... for this share of the block; the rest are the farthest vectors not yet in it.
LOOKAHEAD_SHARE = 0.5


def _likely_next(columns: np.ndarray, min_sq: np.ndarray, idx: int, n_block: int) -> np.ndarray:
    """int64 (B,) the vectors whose distance rows the next block computes, `idx` (the next
    centre) first: half of them are what the greedy itself picks next when run on the
    `POOL_FACTOR * B` currently farthest vectors (with their exact distances to each other), the
    other half the farthest vectors not among those.

    The look-ahead picks are the true next picks for as long as the farthest vector overall stays
    in the pool; the plain farthest vectors cover the steps after it leaves. Blocks needed at a
    1 % coreset of real PatchCore features (efficientnet_lite0, D = 152, B = 64), plain B farthest
    -> look-ahead only -> this half-and-half: MPDD 512 px (659k vectors) 182 -> 331 -> 139;
    gray_big 224 px (593k) 120 -> 101 -> 118; 235k: 61 -> 43 -> 57; 42k: 23 -> 14 -> 19.

    Args:
        columns: float32 (P + 2, N) augmented columns (`_augmented_columns`).
        min_sq: float32 (N,) current squared distance to the nearest centre (-1: selected).
        idx: the next centre (the argmax of `min_sq`).
        n_block: B.
    """
    n_vectors = min_sq.shape[0]
    n_pool = min(POOL_FACTOR * n_block, n_vectors)
    pool = np.argpartition(min_sq, n_vectors - n_pool)[n_vectors - n_pool :]
    if not np.any(pool == idx):  # a tie at the pool's edge: make room for the next centre
        pool[np.argmin(min_sq[pool])] = idx
    n_dims = columns.shape[0] - 2
    vectors = columns[:n_dims, pool]
    sq_norms = columns[n_dims, pool]
    dist_sq = sq_norms[:, None] + sq_norms[None, :] - 2.0 * (vectors.T @ vectors)
    pool_min = min_sq[pool]  # a copy (fancy indexing)
    order: list[int] = []
    best = int(np.flatnonzero(pool == idx)[0])
    while len(order) < max(1, round(LOOKAHEAD_SHARE * n_block)) and pool_min[best] >= 0:
        order.append(int(pool[best]))
        np.minimum(pool_min, dist_sq[best], out=pool_min)
        pool_min[best] = -1.0  # picked
        best = int(np.argmax(pool_min))
    looked = set(order)
    farthest = pool[np.argsort(-min_sq[pool], kind="stable")]
    order += [int(v) for v in farthest if int(v) not in looked][: n_block - len(order)]
    return np.asarray(order, dtype=np.int64)


def _first_centre(n_vectors: int, seed: int, start_index: int | None) -> int:
    """The first centre: `start_index`, or a vector drawn with `seed`."""
    gen = torch.Generator().manual_seed(seed)
    first = int(torch.randint(n_vectors, (1,), generator=gen))
    if start_index is None:
        return first
    if not 0 <= int(start_index) < n_vectors:
        raise ConfigError(f"coreset start_index must be in [0, {n_vectors}), got {start_index}")
    return int(start_index)


def greedy_coreset(
    features: np.ndarray,
    ratio: float,
    *,
    projection_dim: int = 0,
    seed: int = 0,
    start_index: int | None = None,
    block_size: int = 64,
    progress: Progress = no_progress,
    stats: CoresetStats | None = None,
) -> np.ndarray:
    """Indices of a greedy k-center coreset of `features`, in selection order.

    Args:
        features: float32 (N, D) patch embeddings (other float dtypes are converted once).
        ratio: fraction of the N vectors to keep, in (0, 1].
        projection_dim: P of the random projection used for distances (<= 0: none).
        seed: seeds the projection and the first centre.
        start_index: the first centre (None: a seeded random vector); it is the first index
            returned, as in anomalib's KCenterGreedy.
        block_size: B, centres whose distance rows one pass over the data computes.
        progress: called as progress(done, total, "coreset") about every 1 % of the steps.
        stats: when given, filled with the run's cost.

    Returns:
        int64 (M,) distinct indices into `features`, M = coreset_size(N, ratio).

    Raises:
        DataError: `features` is not a non-empty 2-D array of finite values.
        ConfigError: bad ratio or block size.
    """
    if features.ndim != 2 or features.shape[0] == 0:
        raise DataError(f"coreset needs a non-empty (N, D) array, got shape {features.shape}")
    if block_size < 1:
        raise ConfigError(f"coreset block_size must be >= 1, got {block_size}")
    n_vectors = features.shape[0]
    n_select = coreset_size(n_vectors, ratio)
    n_block = min(block_size, n_vectors)
    t0 = time.perf_counter()
    if n_select >= n_vectors:
        return np.arange(n_vectors, dtype=np.int64)
    columns = _projected_columns(features, projection_dim, seed)
    first = _first_centre(n_vectors, seed, start_index)
    selected = np.empty(n_select, dtype=np.int64)
    # The per-step (N,) work runs in numpy: single-threaded, so no thread-pool barrier per step
    # (on a busy 2-core machine a torch parallel region per step costs ~10 ms of waiting).
    min_sq = np.full(n_vectors, np.inf, dtype=np.float32)
    block_rows: dict[int, int] = {}
    buffer = np.empty((n_block, n_vectors), dtype=np.float32)
    block = buffer[:0]
    n_blocks = 0
    report_every = max(1, n_select // 100)
    idx = first
    for step in range(n_select):
        if idx not in block_rows:
            cand = _likely_next(columns, min_sq, idx, n_block) if step else np.array([idx])
            # (B, N) squared distances from the block's vectors to every vector: one pass.
            block = _distance_rows(columns, cand, buffer)
            block_rows = {int(c): r for r, c in enumerate(cand.tolist())}
            n_blocks += 1
        selected[step] = idx
        np.minimum(min_sq, block[block_rows.pop(idx)], out=min_sq)
        min_sq[idx] = -1.0  # never pick a selected vector again
        idx = int(np.argmax(min_sq))
        if step % report_every == 0:
            progress(step, n_select, "coreset")
    progress(n_select, n_select, "coreset")
    seconds = time.perf_counter() - t0
    logger.debug(
        "coreset: %d of %d vectors in %.2f s, %d passes over the data",
        n_select,
        n_vectors,
        seconds,
        n_blocks,
    )
    if stats is not None:
        stats.n_vectors, stats.n_selected = n_vectors, n_select
        stats.n_blocks, stats.seconds = n_blocks, seconds
    return selected
