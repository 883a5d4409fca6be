"""The "nn_index" image scores of the one scorer (`edgead.ops.scoring`): faiss search and
in-graph distances give the same max / top_mean scores; bad entries are refused by name."""

from __future__ import annotations

import numpy as np
import pytest

from edgead.errors import BundleError
from edgead.ops.nn_index import FaissIndex
from edgead.ops.scoring import (
    parse_postprocess,
    score_nn_distances,
    score_nn_embeddings,
    top_mean,
)


def _post(score: str, **extra: object) -> dict[str, object]:
    return {"kind": "nn_index", "grid": [4, 4], "k": 1, "blur_sigma": 1.0, "score": score, **extra}


@pytest.mark.parametrize(("score", "top_k"), [("max", 1), ("top_mean", 1), ("top_mean", 5)])
def test_searched_and_in_graph_distances_score_alike(score: str, top_k: int) -> None:
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(50, 8)).astype(np.float32)
    emb = rng.normal(size=(3, 16, 8)).astype(np.float32)
    post = parse_postprocess(_post(score, top_k=top_k))
    searched = score_nn_embeddings(emb, FaissIndex.build(bank, "Flat"), post, (16, 16))
    dists = np.sqrt(((emb[:, :, None] - bank[None, None]) ** 2).sum(-1)).min(-1)  # (3, 16)
    in_graph = score_nn_distances(dists[:, :, None], post, (16, 16))
    want = np.sort(dists, axis=1)[:, -top_k:].mean(axis=1)
    np.testing.assert_allclose(searched.raw, want, rtol=1e-5)
    np.testing.assert_allclose(in_graph.raw, want, rtol=1e-5)
    np.testing.assert_allclose(in_graph.maps, searched.maps, rtol=1e-4, atol=1e-5)


def test_top_mean_is_between_the_kth_largest_and_the_max() -> None:
    scores = np.array([[1.0, 5.0, 3.0, 4.0], [0.0, 0.0, 2.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(top_mean(scores, 2), [4.5, 1.0])
    np.testing.assert_allclose(top_mean(scores, 1), scores.max(axis=1))


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        (_post("top_mean", top_k=0), "top_k"),
        (_post("top_mean", top_k=17), "top_k"),
        (_post("median"), "median"),
    ],
)
def test_bad_score_entries_are_refused(entry: dict[str, object], match: str) -> None:
    with pytest.raises(BundleError, match=match):
        parse_postprocess(entry)
