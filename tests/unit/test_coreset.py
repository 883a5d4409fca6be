"""Unit tests: greedy k-center coreset (exactness against a naive reference, seeding, errors)."""

from __future__ import annotations

import numpy as np
import pytest

from edgead.errors import ConfigError, DataError
from edgead.models.coreset import CoresetStats, coreset_size, greedy_coreset


def _clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """float32 (n, dim): 12 Gaussian clusters of different spread (no ties in distances)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, size=(12, dim))
    labels = rng.integers(0, 12, size=n)
    spread = rng.uniform(0.2, 1.5, size=12)[labels, None]
    return (centres[labels] + spread * rng.normal(size=(n, dim))).astype(np.float32)


def _naive_greedy(x: np.ndarray, n_select: int, first: int) -> np.ndarray:
    """Textbook farthest-point greedy in float64, starting at `first`."""
    x = x.astype(np.float64)
    selected = [first]
    min_dist = np.linalg.norm(x - x[first], axis=1)
    for _ in range(n_select - 1):
        nxt = int(np.argmax(min_dist))
        selected.append(nxt)
        min_dist = np.minimum(min_dist, np.linalg.norm(x - x[nxt], axis=1))
    return np.array(selected)


def _covering_radius(x: np.ndarray, idx: np.ndarray) -> float:
    """Largest distance from any vector to its nearest selected vector."""
    d2 = ((x[:, None, :].astype(np.float64) - x[idx][None].astype(np.float64)) ** 2).sum(-1)
    return float(np.sqrt(d2.min(axis=1)).max())


def test_matches_naive_greedy_without_projection() -> None:
    x = _clustered(400, 16, seed=0)
    got = greedy_coreset(x, 0.1, projection_dim=0, seed=3)
    assert got.dtype == np.int64 and got.shape == (40,)
    want = _naive_greedy(x, 40, first=int(got[0]))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("block_size", [1, 5, 64])
def test_block_size_does_not_change_the_selection(block_size: int) -> None:
    x = _clustered(500, 24, seed=1)
    reference = greedy_coreset(x, 0.08, projection_dim=8, seed=0, block_size=32)
    stats = CoresetStats()
    got = greedy_coreset(x, 0.08, projection_dim=8, seed=0, block_size=block_size, stats=stats)
    np.testing.assert_array_equal(got, reference)
    assert stats.n_selected == 40 and stats.n_vectors == 500
    assert 1 <= stats.n_blocks <= 40
    if block_size == 1:
        assert stats.n_blocks == 40  # one pass per step without blocking


def test_blocks_save_passes_over_the_data() -> None:
    x = _clustered(2000, 32, seed=2)
    stats = CoresetStats()
    greedy_coreset(x, 0.05, seed=0, block_size=32, stats=stats)
    assert stats.n_blocks < stats.n_selected / 2


def test_seeded_and_distinct() -> None:
    x = _clustered(300, 40, seed=4)
    a = greedy_coreset(x, 0.1, projection_dim=16, seed=7)
    b = greedy_coreset(x, 0.1, projection_dim=16, seed=7)
    c = greedy_coreset(x, 0.1, projection_dim=16, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len(set(a.tolist())) == len(a) == coreset_size(300, 0.1)
    assert a.min() >= 0 and a.max() < 300


def test_covers_better_than_a_random_subset() -> None:
    x = _clustered(600, 160, seed=5)
    exact = greedy_coreset(x, 0.05, projection_dim=0, seed=0)
    projected = greedy_coreset(x, 0.05, projection_dim=64, seed=0)
    rng = np.random.default_rng(0)
    random_radii = [
        _covering_radius(x, rng.choice(600, size=len(exact), replace=False)) for _ in range(5)
    ]
    assert _covering_radius(x, exact) < min(random_radii)
    assert _covering_radius(x, projected) < float(np.median(random_radii))


def test_sizes_and_full_ratio() -> None:
    assert coreset_size(1000, 0.01) == 10
    assert coreset_size(10, 0.001) == 1
    x = _clustered(20, 4, seed=0)
    np.testing.assert_array_equal(greedy_coreset(x, 1.0), np.arange(20))


def test_progress_reaches_the_total() -> None:
    x = _clustered(300, 8, seed=0)
    calls: list[tuple[int, int, str]] = []
    greedy_coreset(x, 0.1, progress=lambda d, t, s: calls.append((d, t, s)))
    assert calls[-1] == (30, 30, "coreset")
    assert all(done <= total for done, total, _ in calls)


def test_errors_name_the_problem() -> None:
    x = _clustered(50, 4, seed=0)
    with pytest.raises(ConfigError, match="coreset_ratio"):
        greedy_coreset(x, 0.0)
    with pytest.raises(ConfigError, match="coreset_ratio"):
        greedy_coreset(x, 1.5)
    with pytest.raises(DataError, match=r"\(N, D\)"):
        greedy_coreset(x[:, 0], 0.1)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        greedy_coreset(bad, 0.1)
    bad[3, 1] = -np.inf
    with pytest.raises(DataError, match="infinite"):
        greedy_coreset(bad, 0.1)


def test_start_index_fixes_the_first_centre() -> None:
    x = _clustered(300, 8, seed=4)
    got = greedy_coreset(x, 0.1, projection_dim=0, seed=0, start_index=17)
    np.testing.assert_array_equal(got, _naive_greedy(x, 30, first=17))
    with pytest.raises(ConfigError, match="start_index"):
        greedy_coreset(x, 0.1, start_index=300)
