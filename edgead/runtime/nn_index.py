"""Nearest-neighbour search behind one small interface (faiss; torch-free).

Distances leave this module as Euclidean distances (L2, not squared): faiss's L2 indexes return
squared distances, which are converted here once, at the boundary.
"""

from __future__ import annotations

import numpy as np

from edgead.errors import BundleError


class FaissIndex:
    """A faiss index built from a factory string, or read from serialized bytes.

    Args:
        index: a faiss.Index whose metric is L2.
        factory: the index_factory string it was built from (for the manifest).
    """

    def __init__(self, index: object, factory: str) -> None:
        self.index = index
        self.factory = factory

    @property
    def dim(self) -> int:
        """Vector dimension D the index takes."""
        return int(self.index.d)  # type: ignore[attr-defined]

    @property
    def n_vectors(self) -> int:
        """Number of stored vectors M."""
        return int(self.index.ntotal)  # type: ignore[attr-defined]

    @classmethod
    def build(cls, vectors: np.ndarray, factory: str = "Flat", seed: int = 0) -> FaissIndex:
        """Train (if needed) and fill an index with `vectors` float32 (M, D)."""
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_L2)
        if not index.is_trained:
            index.train(vectors)
        index.add(vectors)
        return cls(index, factory)

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(distances float32 (N, k) Euclidean L2, ids int64 (N, k)) of `queries` (N, D)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise BundleError(f"query vectors have shape {queries.shape}; the index takes (N, {self.dim})")
        sq_dist, ids = self.index.search(queries, k)  # type: ignore[attr-defined]
        return np.sqrt(np.maximum(sq_dist, 0.0)).astype(np.float32), ids

    def to_bytes(self) -> bytes:
        """faiss's own serialization of the index."""
        import faiss

        return faiss.serialize_index(self.index).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, factory: str) -> FaissIndex:
        """Deserialize an index written by `to_bytes`; BundleError when it is damaged."""
        import faiss

        try:
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8).copy())
        except RuntimeError as exc:
            raise BundleError(f"the nearest-neighbour index is damaged or truncated: {exc}") from exc
        return cls(index, factory)
