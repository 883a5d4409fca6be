"""Nearest-neighbour search behind one small interface (faiss + numpy; torch-free).

Distances leave this module as Euclidean distances (L2, not squared): faiss's L2 indexes return
squared distances, which are converted here once, at the boundary.

`Searcher` is the interface the runtime codes against; `FaissIndex` implements it on the CPU (a GPU
implementation, e.g. an fp16 matrix product on the accelerator, can implement the same protocol).
An index may be compressed (fp16 / int8 scalar quantisation, product quantisation, IVF, HNSW, with
an optional PCA / random-rotation prefix, all inside faiss's own file) and may re-rank its top-R
candidates exactly against an fp16 copy of the bank held as a plain numpy array.

Index bytes are untrusted input: `validate_index_bytes` walks the whole file layout
(`edgead.ops.faiss_check`: every length field against the bytes that remain) before faiss
parses anything, and
`load_index` checks the result against the manifest and the graph's output dimension.
"""

from __future__ import annotations

import contextlib
import logging
import struct
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edgead.errors import BundleError
from edgead.ops.faiss_check import check_index_bytes

logger = logging.getLogger(__name__)

#: faiss's index header: fourcc, d (int32), ntotal (int64), two int64 fields that always hold 2**20.
_HEADER = struct.Struct("<4siqqq")
_HEADER_MARK = 1 << 20
#: fourcc codes of the index types edgead builds (see faiss/impl/index_write.cpp).
KNOWN_FOURCC = frozenset(
    {
        b"IxF2",
        b"IxFI",
        b"IxSQ",
        b"IxPq",
        b"IPfs",
        b"IwFl",
        b"IwSq",
        b"IwSQ",
        b"IwPQ",
        b"IwPf",
        b"IxPT",
        b"IHNf",
        b"IHNs",
        b"IHNp",
        b"IxRF",
        b"IxHe",
        b"IxH2",
    }
)
_MAX_DIM = 1 << 16


@runtime_checkable
class Searcher(Protocol):
    """k-nearest-neighbour search over a fixed memory bank; L2 (not squared) distances out."""

    @property
    def dim(self) -> int:
        """Vector dimension D the searcher takes."""

    @property
    def n_vectors(self) -> int:
        """Number of stored vectors M."""

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(distances float32 (N, k) Euclidean, ids int64 (N, k)) of queries float32 (N, D)."""


class FaissIndex:
    """A faiss index (exact or compressed), optionally re-ranked exactly on an fp16 bank copy.

    Args:
        index: a faiss.Index whose metric is L2.
        factory: the index_factory string it was built from (for the manifest).
        nprobe: IVF lists visited per query (IVF indexes only; None keeps the stored value).
        rerank: 0, or R > 0 to fetch the top-max(R, k) candidates from `index` and re-rank
            them by exact L2 against `rerank_bank`.
        rerank_bank: float16 (M, D) copy of the bank (row i = vector id i); needed when rerank > 0.

    Raises:
        BundleError: rerank is asked for without a matching (M, D) bank, or nprobe on a non-IVF
            index.
    """

    def __init__(
        self,
        index: Any,
        factory: str,
        *,
        nprobe: int | None = None,
        rerank: int = 0,
        rerank_bank: np.ndarray | None = None,
    ) -> None:
        self.index = index
        self.factory = factory
        self.rerank = int(rerank)
        self.rerank_bank: np.ndarray | None = None
        if self.rerank < 0:
            raise BundleError(f"rerank must be >= 0 candidates; got {rerank}")
        if self.rerank > 0:
            if rerank_bank is None:
                raise BundleError(
                    f"index asks to re-rank {self.rerank} candidates but no fp16 "
                    "bank "
                    "copy was given; re-export with the rerank array or set rerank=0"
                )
            bank = np.ascontiguousarray(rerank_bank, dtype=np.float16)
            if bank.shape != (self.n_vectors, self.dim):
                raise BundleError(
                    f"re-rank bank has shape {bank.shape}; the index holds "
                    f"({self.n_vectors}, {self.dim}); re-export the bundle"
                )
            self.rerank_bank = bank
        self.nprobe: int | None = None
        if nprobe is not None:
            self.set_nprobe(int(nprobe))

    @property
    def dim(self) -> int:
        """Vector dimension D the index takes (before any PCA inside the index)."""
        return int(self.index.d)

    @property
    def n_vectors(self) -> int:
        """Number of stored vectors M."""
        return int(self.index.ntotal)

    def set_nprobe(self, nprobe: int) -> None:
        """Visit `nprobe` inverted lists per query; BundleError when the index has no IVF part."""
        import faiss

        try:
            ivf = faiss.extract_index_ivf(self.index)
        except RuntimeError as exc:
            raise BundleError(
                f"nprobe={nprobe} was given but index {self.factory!r} has no "
                "inverted file (IVF); drop nprobe from the manifest"
            ) from exc
        if not 1 <= nprobe <= ivf.nlist:
            raise BundleError(f"nprobe={nprobe} is outside 1..{ivf.nlist} (the index's nlist)")
        ivf.nprobe = nprobe
        self.nprobe = nprobe

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        factory: str = "Flat",
        seed: int = 0,
        *,
        nprobe: int | None = None,
        rerank: int = 0,
        train_threads: int | None = 1,
    ) -> FaissIndex:
        """Train (if needed) and fill an index with `vectors` float32 (M, D).

        Args:
            vectors: float32 (M, D) memory bank; row i gets id i.
            factory: faiss index_factory string ("Flat", "SQ8", "PCA64,PQ32x4fs", ...).
            seed: seed of faiss's k-means / PCA training (set on the clustering objects).
            nprobe: see the class docstring.
            rerank: R > 0 keeps an fp16 copy of `vectors` for exact re-ranking of R candidates.
            train_threads: OpenMP threads for training and adding (restored afterwards); 1 by
                default because faiss's k-means on a busy 2-core machine ran 15-50x slower with
                2 threads than with 1 (OpenMP barriers spin); None keeps faiss's setting.

        Raises:
            BundleError: the vectors are not a non-empty (M, D) array.
        """
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] == 0:
            raise BundleError(
                f"index vectors must be a non-empty (M, D) array; got {vectors.shape}"
            )
        index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_L2)
        _seed_training(index, seed)
        with _training_threads(train_threads):
            if not index.is_trained:
                index.train(vectors)
            index.add(vectors)
        bank = vectors.astype(np.float16) if rerank > 0 else None
        return cls(index, factory, nprobe=nprobe, rerank=rerank, rerank_bank=bank)

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Distances and ids of the k nearest bank vectors of each query.

        Args:
            queries: float (N, D); converted to C-contiguous float32 once, here.
            k: neighbours per query, 1 <= k <= M.

        Returns:
            (distances float32 (N, k) Euclidean L2, not squared, ascending; ids int64 (N, k)).
            An approximate index may return fewer than k hits for a query (IVF with a small
            nprobe): those slots hold distance inf and id -1.

        Raises:
            BundleError: queries are not (N, D) for this index's D, or k is out of range.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise BundleError(
                f"query vectors have shape {queries.shape}; the index takes (N, {self.dim})"
            )
        if not 1 <= k <= self.n_vectors:
            raise BundleError(
                f"k={k} neighbours asked for; the index holds {self.n_vectors} vectors"
            )
        if self.rerank_bank is not None:
            return self._search_rerank(queries, k, self.rerank_bank)
        sq_dist, ids = self._faiss_search(queries, k)
        dist = np.sqrt(np.maximum(sq_dist, 0.0)).astype(np.float32)
        dist[ids < 0] = np.inf
        return dist, ids

    def _faiss_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """faiss's own search; its run-time failure (a damaged index that passed the layout
        check) becomes a BundleError."""
        try:
            return self.index.search(queries, k)
        except RuntimeError as exc:
            raise BundleError(
                f"the nearest-neighbour index {self.factory!r} failed searching "
                f"({str(exc).splitlines()[0][:200]}); the index member is damaged, re-export it"
            ) from exc

    def _search_rerank(
        self, queries: np.ndarray, k: int, bank: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by exact L2 over `bank` float16 (M, D) among the top-max(R, k) candidates."""
        n_cand = min(max(self.rerank, k), self.n_vectors)
        _, cand = self._faiss_search(queries, n_cand)
        dist = np.empty((len(queries), n_cand), dtype=np.float32)
        chunk = max(1, (1 << 22) // max(1, n_cand * self.dim))  # ~16 MiB of float32 per chunk
        for lo in range(0, len(queries), chunk):
            ids = cand[lo : lo + chunk]
            vecs = bank[np.maximum(ids, 0)].astype(np.float32)  # (n, R, D)
            diff = vecs - queries[lo : lo + chunk, None, :]
            d = np.sqrt(np.einsum("nrd,nrd->nr", diff, diff))
            d[ids < 0] = np.inf
            dist[lo : lo + chunk] = d
        order = np.argsort(dist, axis=1, kind="stable")[:, :k]
        return (
            np.take_along_axis(dist, order, axis=1),
            np.take_along_axis(cand, order, axis=1).astype(np.int64),
        )

    def reconstruct_all(self) -> np.ndarray:
        """float32 (M, D) bank vectors as the index stores them (decoded codes; exact for Flat).

        Uses the fp16 re-rank copy when there is one. For IVF indexes a direct map is built once.
        """
        import faiss

        if self.rerank_bank is not None:
            return self.rerank_bank.astype(np.float32)
        try:
            ivf = faiss.extract_index_ivf(self.index)
        except RuntimeError:
            ivf = None
        if ivf is not None and ivf.direct_map.type == faiss.DirectMap.NoMap:
            ivf.make_direct_map()
        return np.asarray(self.index.reconstruct_n(0, self.n_vectors), dtype=np.float32)

    def to_bytes(self) -> bytes:
        """faiss's own serialization of the index (the fp16 re-rank bank is not part of it)."""
        import faiss

        return faiss.serialize_index(self.index).tobytes()

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        factory: str,
        *,
        expected_dim: int | None = None,
        expected_n: int | None = None,
        nprobe: int | None = None,
        rerank: int = 0,
        rerank_bank: np.ndarray | None = None,
    ) -> FaissIndex:
        """Deserialize an index written by `to_bytes`, validating it first.

        Raises:
            BundleError: the bytes are damaged, truncated, not a faiss index, or hold a different
                dimension / vector count than expected.
        """
        import faiss

        validate_index_bytes(data, expected_dim=expected_dim, expected_n=expected_n)
        try:
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8).copy())
        except (RuntimeError, MemoryError, ValueError) as exc:
            raise BundleError(
                f"the nearest-neighbour index is damaged or truncated: "
                f"{str(exc).splitlines()[0][:300]}; re-export the bundle"
            ) from exc
        if index.metric_type != faiss.METRIC_L2:
            raise BundleError(
                f"the index uses faiss metric {index.metric_type}; edgead needs L2 "
                f"({faiss.METRIC_L2})"
            )
        written = faiss.serialize_index(index).nbytes
        if written != len(data):
            raise BundleError(
                f"the nearest-neighbour index has {len(data)} bytes but parses as "
                f"{written}; the file is damaged (extra or missing bytes)"
            )
        return cls(index, factory, nprobe=nprobe, rerank=rerank, rerank_bank=rerank_bank)


def read_index_header(data: bytes) -> tuple[bytes, int, int]:
    """(fourcc, dim, n_vectors) from faiss's fixed index header; BundleError if it is not one."""
    if len(data) < _HEADER.size:
        raise BundleError(
            f"the nearest-neighbour index is truncated: {len(data)} bytes, shorter "
            f"than faiss's {_HEADER.size}-byte header; re-export the bundle"
        )
    fourcc, dim, ntotal, mark1, mark2 = _HEADER.unpack_from(data)
    if fourcc not in KNOWN_FOURCC or mark1 != _HEADER_MARK or mark2 != _HEADER_MARK:
        raise BundleError(
            f"the nearest-neighbour index is damaged or not a faiss index (header "
            f"{data[:4]!r}, markers {mark1}, {mark2}); re-export the bundle"
        )
    if not 0 < dim <= _MAX_DIM or not 0 <= ntotal <= len(data) * 8:
        raise BundleError(
            f"the nearest-neighbour index header is implausible (dim {dim}, "
            f"{ntotal} vectors in {len(data)} bytes); the file is damaged"
        )
    return fourcc, int(dim), int(ntotal)


def validate_index_bytes(
    data: bytes, *, expected_dim: int | None = None, expected_n: int | None = None
) -> None:
    """Check the index layout (and dim / count when given) before faiss parses the bytes.

    Raises:
        BundleError: not a faiss index of a known type, or dim / count differ from the expected.
    """
    _, dim, ntotal = check_index_bytes(data)
    if expected_dim is not None and dim != expected_dim:
        raise BundleError(
            f"the nearest-neighbour index takes {dim}-d vectors but {expected_dim} "
            "were expected; the index does not belong to this model, re-export it"
        )
    if expected_n is not None and ntotal != expected_n:
        raise BundleError(
            f"the nearest-neighbour index holds {ntotal} vectors but the manifest "
            f"says {expected_n}; the bundle is inconsistent, re-export it"
        )


def load_index(
    data: bytes,
    spec: Any,
    *,
    embedding_dim: int | None = None,
    rerank_bank: np.ndarray | None = None,
) -> FaissIndex:
    """A validated `FaissIndex` for a bundle's index member and its manifest `IndexSpec`.

    Args:
        data: bytes of the member `spec.file`.
        spec: the manifest's `edgead.bundle.IndexSpec` (factory, metric, dim, n_vectors, nprobe,
            rerank, rerank_array).
        embedding_dim: D of the graph's "embedding" output (last axis); None skips that check.
        rerank_bank: float16 (M, D) array named by `spec.rerank_array` when `spec.rerank > 0`.

    Raises:
        BundleError: damaged bytes, metric not "l2", or a dimension that differs between the
            graph output, the manifest and the index file (the message names both numbers).
    """
    if spec.metric != "l2":
        raise BundleError(f"index metric {spec.metric!r} is not supported; this runtime knows 'l2'")
    if embedding_dim is not None and int(embedding_dim) != int(spec.dim):
        raise BundleError(
            f"the graph outputs {embedding_dim}-d embeddings but the index "
            f"{spec.file!r} takes {spec.dim}-d vectors; re-export the bundle"
        )
    return FaissIndex.from_bytes(
        data,
        spec.factory,
        expected_dim=int(spec.dim),
        expected_n=int(spec.n_vectors),
        nprobe=spec.nprobe,
        rerank=int(spec.rerank or 0),
        rerank_bank=rerank_bank,
    )


@contextlib.contextmanager
def _training_threads(threads: int | None) -> Iterator[None]:
    """Run faiss with `threads` OpenMP threads inside the block, then restore the old count."""
    import faiss

    if threads is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(threads))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _seed_training(index: Any, seed: int) -> None:
    """Set the k-means / PCA seeds of every trainable part faiss exposes (best effort)."""
    import faiss

    seen: list[Any] = [index]
    while seen:
        part = seen.pop()
        for attr in ("cp", "pq", "sq"):
            sub = getattr(part, attr, None)
            if sub is not None and hasattr(sub, "seed"):
                sub.seed = seed
            if sub is not None and hasattr(sub, "cp"):
                sub.cp.seed = seed
        if isinstance(part, faiss.IndexPreTransform):
            for i in range(part.chain.size()):
                tr = faiss.downcast_VectorTransform(part.chain.at(i))
                if hasattr(tr, "seed"):
                    tr.seed = seed
            seen.append(faiss.downcast_index(part.index))
        for attr in ("quantizer", "storage", "base_index"):
            sub = getattr(part, attr, None)
            if sub is not None:
                seen.append(faiss.downcast_index(sub))
