"""Greedy k-center coreset selection (PatchCore's memory-bank subsampling), fast on a few cores.

The algorithm is the classic farthest-point (Gonzalez) greedy: start from a seeded random
vector, then repeatedly add the vector farthest from everything selected so far. Two things keep
it fast on a 2-core CPU:

- Distances are measured after a seeded Gaussian random projection to `projection_dim`
  dimensions (Johnson-Lindenstrauss), with the projected vectors stored in a compact dtype
  (float16 by default) so each pass reads half the memory of float32.
- Each step touches only the vectors whose nearest-centre distance can still shrink. With the
  triangle inequality, a vector x with nearest centre a(x) at distance d(x) cannot get closer to
  the new centre c unless ||c - a(x)|| < 2 d(x); one vectorised (N,) comparison finds them, and
  only those rows are multiplied. Late in the run that is a small fraction of the data.

There is no Python loop over vectors: each of the M steps is a handful of tensor operations.
Torch is used on the CPU only.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch

from edgead.errors import ConfigError, DataError
from edgead.models.base import Progress, no_progress

logger = logging.getLogger(__name__)

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}

#: When more than this fraction of vectors must be updated, one full pass beats gather + matvec.
_FULL_PASS_FRACTION = 0.4


def coreset_size(n_vectors: int, ratio: float) -> int:
    """Number of vectors kept: round(n_vectors * ratio), at least 1 and at most n_vectors."""
    if not 0.0 < ratio <= 1.0:
        raise ConfigError(f"coreset ratio must be in (0, 1], got {ratio}")
    return int(min(n_vectors, max(1, round(n_vectors * ratio))))


def random_projection(features: torch.Tensor, projection_dim: int, seed: int,
                      chunk_rows: int = 65536) -> torch.Tensor:
    """float32 (N, P) Gaussian random projection of `features` (N, D); identity when P >= D.

    Args:
        features: float32 (N, D).
        projection_dim: P, target dimension; values <= 0 or >= D keep the original vectors.
        seed: seeds the projection matrix (entries N(0, 1/P), so distances are kept on average).
        chunk_rows: rows projected per matmul, bounding temporary memory.
    """
    n_dims = features.shape[1]
    if projection_dim <= 0 or projection_dim >= n_dims:
        return features
    gen = torch.Generator().manual_seed(seed)
    matrix = torch.randn(n_dims, projection_dim, generator=gen) / math.sqrt(projection_dim)
    out = torch.empty(features.shape[0], projection_dim, dtype=torch.float32)
    for start in range(0, features.shape[0], chunk_rows):
        out[start:start + chunk_rows] = features[start:start + chunk_rows] @ matrix
    return out


def greedy_coreset(features: np.ndarray, ratio: float, *, projection_dim: int = 128,
                   seed: int = 0, dtype: str = "float16",
                   progress: Progress = no_progress) -> np.ndarray:
    """Indices of a greedy k-center coreset of `features`, in selection order.

    Args:
        features: float32 (N, D) patch embeddings (any float dtype is converted once).
        ratio: fraction of the N vectors to keep, in (0, 1].
        projection_dim: P of the random projection used for distances (<= 0: none).
        seed: seeds the projection and the first centre.
        dtype: storage/compute dtype of the projected vectors for the distance products:
            "float16" (default), "bfloat16" or "float32". Norms and running distances stay float32.
        progress: called as progress(done, total, "coreset") every ~1 % of the steps.

    Returns:
        int64 (M,) indices into `features`, M = coreset_size(N, ratio), all distinct.

    Raises:
        DataError: `features` is not a non-empty 2-D array of finite values.
        ConfigError: bad ratio or dtype.
    """
    if features.ndim != 2 or features.shape[0] == 0:
        raise DataError(f"coreset needs a non-empty (N, D) array, got shape {features.shape}")
    if dtype not in _DTYPES:
        raise ConfigError(f"coreset dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    n_vectors = features.shape[0]
    n_select = coreset_size(n_vectors, ratio)
    if n_select >= n_vectors:
        return np.arange(n_vectors, dtype=np.int64)
    t0 = time.perf_counter()
    feats = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    if not bool(torch.isfinite(feats).all()):
        raise DataError("coreset input holds NaN or infinite values; check the feature extractor")
    proj = random_projection(feats, projection_dim, seed)
    proj = proj - proj.mean(dim=0, keepdim=True)
    # Scale so the largest norm is 1: float16 products then cannot overflow.
    scale = float(proj.norm(dim=1).max())
    if scale > 0:
        proj = proj / scale
    sq_norms = (proj * proj).sum(dim=1)  # float32 (N,)
    compact = proj.to(_DTYPES[dtype]).contiguous()
    del proj

    gen = torch.Generator().manual_seed(seed)
    first = int(torch.randint(n_vectors, (1,), generator=gen))
    selected = torch.empty(n_select, dtype=torch.int64)
    centres = torch.empty(n_select, compact.shape[1], dtype=torch.float32)
    centre_sq = torch.empty(n_select, dtype=torch.float32)

    selected[0] = first
    centres[0] = compact[first].float()
    centre_sq[0] = sq_norms[first]
    min_dist = _dist_to(compact, sq_norms, centres[0], centre_sq[0])  # float32 (N,), L2
    nearest = torch.zeros(n_vectors, dtype=torch.int64)
    min_dist[first] = 0.0
    n_rows_touched = n_vectors
    report_every = max(1, n_select // 100)
    for step in range(1, n_select):
        idx = int(torch.argmax(min_dist))
        selected[step] = idx
        centre = compact[idx].float()
        centres[step] = centre
        centre_sq[step] = sq_norms[idx]
        # Distances from the new centre to every earlier centre (step,), for the pruning bound.
        cc_sq = centre_sq[:step] + centre_sq[step] - 2.0 * (centres[:step] @ centre)
        centre_dist = cc_sq.clamp_min_(0.0).sqrt_()
        candidates = centre_dist[nearest] < 2.0 * min_dist
        n_cand = int(candidates.sum())
        if n_cand > _FULL_PASS_FRACTION * n_vectors:
            new_dist = _dist_to(compact, sq_norms, centre, centre_sq[step])
            closer = new_dist < min_dist
            min_dist = torch.where(closer, new_dist, min_dist)
            nearest = torch.where(closer, torch.tensor(step), nearest)
            n_rows_touched += n_vectors
        elif n_cand > 0:
            rows = candidates.nonzero().squeeze(1)
            new_dist = _dist_to(compact[rows], sq_norms[rows], centre, centre_sq[step])
            closer = new_dist < min_dist[rows]
            rows = rows[closer]
            min_dist[rows] = new_dist[closer]
            nearest[rows] = step
            n_rows_touched += n_cand
        min_dist[idx] = 0.0
        if step % report_every == 0:
            progress(step, n_select, "coreset")
    progress(n_select, n_select, "coreset")
    seconds = time.perf_counter() - t0
    logger.debug("coreset: %d of %d vectors in %.2f s (%.1f%% of rows touched per step on average)",
                 n_select, n_vectors, seconds, 100.0 * n_rows_touched / (n_vectors * n_select))
    return selected.numpy()


def _dist_to(vectors: torch.Tensor, sq_norms: torch.Tensor, centre: torch.Tensor,
             centre_sq: torch.Tensor) -> torch.Tensor:
    """float32 (N,) Euclidean distances (L2, not squared) from `vectors` (N, P) to `centre` (P,).

    Uses ||x||^2 + ||c||^2 - 2 x.c with the product in the storage dtype of `vectors`.
    Not for traced/exported paths.
    """
    dots = (vectors @ centre.to(vectors.dtype)).float()
    return (sq_norms + centre_sq - 2.0 * dots).clamp_min_(0.0).sqrt_()
