"""Greedy k-center coreset selection (PatchCore's memory-bank subsampling), fast on a few cores.

The algorithm is the classic farthest-point (Gonzalez) greedy: start from a seeded random
vector, then repeatedly add the vector farthest from everything selected so far, and keep for
every vector its squared distance to the nearest selected one. Distances are exact by default;
with `projection_dim` > 0 they are measured after a seeded Gaussian random projection to that
many dimensions (Johnson-Lindenstrauss; for wide features).

Each step's work is one (N,) minimum and one argmax. The distances from all N vectors to the
next centres come from blocked matrix products: when the farthest vector is not among the
vectors of the current block, the `block_size` currently farthest vectors are taken as the next
block and their distance rows are computed with one (N, P) x (P, B) product. The farthest
vectors tend to stay farthest, so one pass over the data serves many steps, and the result is
the same as the plain greedy (it is exact, not an approximation). There is no Python loop over
vectors. Torch is used on the CPU only.
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

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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


def _distance_rows(columns: torch.Tensor, sq_norms: torch.Tensor, rows: torch.Tensor) -> np.ndarray:
    """float32 (B, N) squared distances from the vectors `rows` (B,) to all N vectors.

    Args:
        columns: (P, N) projected vectors, one per column (float32 or half precision).
        sq_norms: float32 (N,) their squared norms.
        rows: int64 (B,) indices of the block's centres.
    """
    centres = columns[:, rows].T.contiguous()  # (B, P)
    dots = torch.mm(centres, columns).float()  # (B, N)
    # |x - c|^2 = |x|^2 - 2 x.c + |c|^2, summed in float32.
    dots.mul_(-2.0).add_(sq_norms[None, :]).add_(sq_norms[rows][:, None])
    return dots.numpy()


def _centred_columns(
    vectors: torch.Tensor, chunk_rows: int = 65536
) -> tuple[torch.Tensor, torch.Tensor]:
    """((D, N) float32 columns of `vectors` (N, D) centred on their mean and scaled to largest
    norm 1; float32 (N,) their squared norms), built row chunk by row chunk so that no centred
    (N, D) copy exists beside the result (the input is not modified)."""
    n_vectors = vectors.shape[0]
    mean = vectors.mean(dim=0, keepdim=True)
    scale = 0.0
    for start in range(0, n_vectors, chunk_rows):
        norms = (vectors[start : start + chunk_rows] - mean).norm(dim=1)
        scale = max(scale, float(norms.max()))
    columns = torch.empty(vectors.shape[1], n_vectors, dtype=torch.float32)
    sq_norms = torch.empty(n_vectors, dtype=torch.float32)
    for start in range(0, n_vectors, chunk_rows):
        centred = vectors[start : start + chunk_rows] - mean
        if scale > 0:  # largest norm 1: half-precision products cannot overflow
            centred /= scale
        sq_norms[start : start + chunk_rows] = (centred * centred).sum(dim=1)
        columns[:, start : start + chunk_rows] = centred.T
    return columns, sq_norms


def _projected_columns(
    features: np.ndarray, projection_dim: int, seed: int, dtype: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """((P, N) projected, centred vectors scaled to largest norm 1, in `dtype`; float32 (N,)
    their squared norms). Raises DataError on NaN or infinite input.

    The (P, N) layout: a block's (B, P) x (P, N) product gives its distance rows in the layout
    the per-step minimum reads, with no transposed copy of the (B, N) result."""
    feats = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    if not bool(torch.isfinite(feats).all()):
        raise DataError("coreset input holds NaN or infinite values; check the feature extractor")
    columns, sq_norms = _centred_columns(random_projection(feats, projection_dim, seed))
    return columns.to(_DTYPES[dtype]), sq_norms


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
    dtype: str = "float32",
    block_size: int = 32,
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
        dtype: dtype of the projected vectors in the block products: "float32" (default;
            fastest on CPUs without native half-precision units), "float16" or "bfloat16"
            (half the memory; fast on CPUs with AVX512-FP16/AMX). Running distances stay float32.
        block_size: B, centres whose distance rows one pass over the data computes.
        progress: called as progress(done, total, "coreset") about every 1 % of the steps.
        stats: when given, filled with the run's cost.

    Returns:
        int64 (M,) distinct indices into `features`, M = coreset_size(N, ratio).

    Raises:
        DataError: `features` is not a non-empty 2-D array of finite values.
        ConfigError: bad ratio, dtype or block size.
    """
    if features.ndim != 2 or features.shape[0] == 0:
        raise DataError(f"coreset needs a non-empty (N, D) array, got shape {features.shape}")
    if dtype not in _DTYPES:
        raise ConfigError(f"coreset dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    if block_size < 1:
        raise ConfigError(f"coreset block_size must be >= 1, got {block_size}")
    n_vectors = features.shape[0]
    n_select = coreset_size(n_vectors, ratio)
    n_block = min(block_size, n_vectors)
    t0 = time.perf_counter()
    if n_select >= n_vectors:
        return np.arange(n_vectors, dtype=np.int64)
    columns, sq_norms = _projected_columns(features, projection_dim, seed, dtype)
    first = _first_centre(n_vectors, seed, start_index)
    selected = np.empty(n_select, dtype=np.int64)
    # The per-step (N,) work runs in numpy: single-threaded, so no thread-pool barrier per step
    # (on a busy 2-core machine a torch parallel region per step costs ~10 ms of waiting).
    min_sq = np.full(n_vectors, np.inf, dtype=np.float32)
    block_rows: dict[int, int] = {}
    block = np.empty((0, n_vectors), dtype=np.float32)
    n_blocks = 0
    report_every = max(1, n_select // 100)
    idx = first
    for step in range(n_select):
        if idx not in block_rows:
            if step:
                cand = np.argpartition(min_sq, n_vectors - n_block)[n_vectors - n_block :]
                if not np.any(cand == idx):
                    cand[0] = idx
            else:
                cand = np.array([idx])
            # (B, N) squared distances from the block's vectors to every vector: one pass.
            block = _distance_rows(columns, sq_norms, torch.from_numpy(cand))
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
