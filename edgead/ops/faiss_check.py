"""Structural check of a faiss index file before faiss parses it (stdlib + numpy; torch-free).

faiss's reader trusts its input: every vector is stored as a 64-bit element count followed by
the elements, and the reader allocates `count * element size` bytes before it reads them, so one
flipped length field can ask for terabytes; a zero PQ sub-quantizer count divides by zero; an
HNSW neighbour id outside the graph reads memory out of bounds during search. `check_index_bytes`
walks the layout of every index type edgead's exporter writes (faiss/impl/index_write.cpp):

    IxF2 Flat            IxSQ SQ8 / SQfp16      IxPq PQ (8-bit)        IPfs PQ fast scan (4-bit)
    IwPQ IVF + PQ        IwFl IVF + Flat        IwSq IVF + SQ          IHNs / IHNf HNSW (+SQ/Flat)
    IxPT PCA / random-rotation prefix (Pcam, rrot) around any of the above

It checks that every length field fits in the bytes that remain and agrees with the counts it
implies (vectors x dimension, codes x code size), that sizes such as PQ bits stay in range, that
HNSW neighbour ids and IVF list sizes are consistent, and that the walk ends exactly at the last
byte. Anything else is refused with a BundleError naming the member: edgead loads no index type it
has not checked.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from edgead.errors import BundleError

_MAX_DIM = 1 << 16
_MAX_NESTING = 4
_IDX_MARK = 1 << 20
#: faiss ScalarQuantizer qtypes 0..8 (QT_8bit .. QT_bf16 in faiss 1.8+; newer enums are refused).
_SQ_CODE_BITS = {0: 8, 1: 4, 2: 8, 3: 4, 4: 16, 5: 8, 6: 6, 7: 8, 8: 16}


class _Reader:
    """A cursor over the index bytes; every read is bounded by what remains."""

    def __init__(self, data: bytes, member: str) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.member = member

    def fail(self, what: str) -> BundleError:
        return BundleError(
            f"bundle member {self.member!r}: faiss index is damaged ({what} at byte {self.pos} "
            f"of {len(self.data)}); re-export the bundle"
        )

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or n > self.remaining():
            raise self.fail(f"{what} needs {n} bytes, {self.remaining()} remain")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> Any:
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.take(size, what))[0]

    def fourcc(self) -> bytes:
        return bytes(self.take(4, "fourcc"))

    def vector(self, itemsize: int, what: str, expected: int | None = None) -> memoryview:
        """Bytes of a faiss vector: uint64 count, then count * itemsize bytes."""
        count = self.unpack("Q", f"{what} length")
        if expected is not None and count != expected:
            raise self.fail(f"{what} holds {count} items, expected {expected}")
        if count * itemsize > self.remaining():
            raise self.fail(f"{what} declares {count} items of {itemsize} bytes")
        return self.take(count * itemsize, what)


def check_index_bytes(data: bytes, member: str = "memory_bank.faiss") -> tuple[bytes, int, int]:
    """(fourcc, dim, n_vectors) of a faiss index file whose whole layout was checked.

    Args:
        data: the index member's bytes (faiss's own serialization).
        member: the member name, for messages.

    Raises:
        BundleError: an unknown index type, or a field that is out of range, inconsistent or
            reaches past the end of the bytes (the message names the member and the field).
    """
    reader = _Reader(data, member)
    fourcc, dim, ntotal = _index(reader, 0)
    if reader.remaining():
        raise reader.fail(f"{reader.remaining()} trailing bytes after the index")
    return fourcc, dim, ntotal


def _header(r: _Reader) -> tuple[int, int]:
    """(d, ntotal) from faiss's index header; the metric must be L2."""
    dim = r.unpack("i", "d")
    ntotal = r.unpack("q", "ntotal")
    if r.unpack("q", "marker") != _IDX_MARK or r.unpack("q", "marker") != _IDX_MARK:
        raise r.fail("header markers are not 2**20")
    r.unpack("B", "is_trained")
    metric = r.unpack("i", "metric_type")
    if metric != 1:  # METRIC_L2
        raise r.fail(f"metric_type {metric} (edgead needs L2 = 1)")
    if not 0 < dim <= _MAX_DIM or not 0 <= ntotal <= r.remaining():
        raise r.fail(f"implausible dimension {dim} or vector count {ntotal}")
    return dim, ntotal


def _index(r: _Reader, depth: int) -> tuple[bytes, int, int]:
    if depth > _MAX_NESTING:
        raise r.fail("indexes nested too deeply")
    fourcc = r.fourcc()
    readers = {
        b"IxF2": _flat,
        b"IxSQ": _sq_index,
        b"IxPq": _pq_index,
        b"IPfs": _pq_fastscan,
        b"IwPQ": _ivf_pq,
        b"IwFl": _ivf_flat,
        b"IwSq": _ivf_sq,
        b"IHNs": _hnsw,
        b"IHNf": _hnsw,
        b"IxPT": _pretransform,
    }
    if fourcc not in readers:
        raise r.fail(f"index type {fourcc!r} is not one this runtime checks and loads")
    dim, ntotal = _header(r)
    readers[fourcc](r, dim, ntotal, depth)
    return fourcc, dim, ntotal


def _flat(r: _Reader, dim: int, ntotal: int, depth: int) -> None:
    r.vector(4, "flat vectors", expected=ntotal * dim)


def _scalar_quantizer(r: _Reader, dim: int) -> int:
    """Read a ScalarQuantizer; returns its code size in bytes."""
    qtype = r.unpack("i", "sq qtype")
    if qtype not in _SQ_CODE_BITS:
        raise r.fail(f"scalar quantizer type {qtype}")
    r.unpack("i", "sq rangestat")
    r.unpack("f", "sq rangestat_arg")
    if r.unpack("Q", "sq d") != dim:
        raise r.fail("scalar quantizer dimension differs from the index")
    code_size = r.unpack("Q", "sq code_size")
    if code_size != (dim * _SQ_CODE_BITS[qtype] + 7) // 8:
        raise r.fail(f"scalar quantizer code size {code_size}")
    trained = r.unpack("Q", "sq trained length")
    if trained > 2 * dim or trained * 4 > r.remaining():
        raise r.fail(f"scalar quantizer training table of {trained} floats")
    r.take(trained * 4, "sq trained")
    return int(code_size)


def _sq_index(r: _Reader, dim: int, ntotal: int, depth: int) -> None:
    code_size = _scalar_quantizer(r, dim)
    r.vector(1, "sq codes", expected=ntotal * code_size)


def _product_quantizer(r: _Reader, dim: int) -> int:
    """Read a ProductQuantizer (d, M, nbits, centroids); returns its code size in bytes."""
    pq_d = r.unpack("Q", "pq d")
    n_sub = r.unpack("Q", "pq M")
    nbits = r.unpack("Q", "pq nbits")
    if pq_d != dim or not 1 <= n_sub <= dim or dim % n_sub or not 1 <= nbits <= 16:
        raise r.fail(f"product quantizer d={pq_d}, M={n_sub}, nbits={nbits} for a {dim}-d index")
    r.vector(4, "pq centroids", expected=dim * (1 << nbits))
    return (n_sub * nbits + 7) // 8


def _pq_index(r: _Reader, dim: int, ntotal: int, depth: int) -> None:
    code_size = _product_quantizer(r, dim)
    r.vector(1, "pq codes", expected=ntotal * code_size)
    r.unpack("i", "pq search_type")
    r.unpack("B", "pq encode_signs")
    r.unpack("i", "pq polysemous_ht")


def _pq_fastscan(r: _Reader, dim: int, ntotal: int, depth: int) -> None:
    _product_quantizer(r, dim)
    implem = r.unpack("i", "fastscan implem")
    bbs = r.unpack("i", "fastscan bbs")
    qbs = r.unpack("i", "fastscan qbs")
    ntotal2 = r.unpack("q", "fastscan ntotal2")
    m2 = r.unpack("Q", "fastscan M2")
    if (
        not 0 <= implem <= 15
        or not 0 <= qbs < 1 << 16
        or bbs not in (32, 64, 96, 128, 160, 192, 224, 256)
        or ntotal2 != -(-ntotal // bbs) * bbs
        or not 1 <= m2 <= dim + 1
    ):
        raise r.fail(
            f"fast-scan layout implem={implem}, bbs={bbs}, qbs={qbs}, ntotal2={ntotal2}, M2={m2}"
        )
    r.vector(1, "fastscan codes", expected=ntotal2 * m2 // 2)


def _ivf_header(r: _Reader, dim: int, depth: int) -> int:
    """Read the IVF part shared by IVF indexes (nlist, nprobe, quantizer, direct map)."""
    nlist = r.unpack("Q", "ivf nlist")
    r.unpack("Q", "ivf nprobe")
    if not 1 <= nlist <= r.remaining():
        raise r.fail(f"ivf nlist {nlist}")
    _, q_dim, q_total = _index(r, depth + 1)
    if q_dim != dim or q_total != nlist:
        raise r.fail(f"ivf quantizer holds {q_total} x {q_dim}-d, expected {nlist} x {dim}-d")
    map_type = r.unpack("B", "direct map type")
    if map_type not in (0, 1):  # NoMap, Array (edgead never writes a hash table)
        raise r.fail(f"direct map type {map_type}")
    r.vector(8, "direct map")
    return int(nlist)


def _inverted_lists(r: _Reader, nlist: int, code_size: int, ntotal: int) -> None:
    if r.fourcc() != b"ilar":
        raise r.fail("inverted lists are not faiss's array layout ('ilar')")
    if r.unpack("Q", "invlists nlist") != nlist or r.unpack("Q", "invlists code_size") != code_size:
        raise r.fail("inverted-list header differs from the index")
    kind = r.fourcc()
    raw = r.vector(8, "inverted-list sizes")
    sizes = np.frombuffer(raw, dtype="<u8")
    if kind == b"full":
        if len(sizes) != nlist:
            raise r.fail(f"{len(sizes)} list sizes for {nlist} lists")
        counts = sizes
    elif kind == b"sprs":
        pairs = sizes.reshape(-1, 2) if len(sizes) % 2 == 0 else None
        if pairs is None or (len(pairs) and int(pairs[:, 0].max()) >= nlist):
            raise r.fail("sparse inverted-list sizes are malformed")
        counts = pairs[:, 1]
    else:
        raise r.fail(f"inverted-list layout {kind!r}")
    if int(counts.sum(dtype=np.float64)) != ntotal:
        raise r.fail(f"inverted lists hold {int(counts.sum(dtype=np.float64))} of {ntotal}")
    for count in counts.tolist():
        r.take(count * code_size, "inverted-list codes")
        ids = np.frombuffer(r.take(count * 8, "inverted-list ids"), dtype="<i8")
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= ntotal):
            raise r.fail(f"inverted-list ids outside 0..{ntotal - 1}")


def _ivf_pq(r: _Reader, dim: int, ntotal: int, depth: int) -> None:
    nlist = _ivf_header(r, dim, depth)
    r.unpack("B", "ivfpq by_residual")
    code_size = r.unpack("Q", "ivfpq code_size")
    if code_size != _product_quantizer(r, dim):
        raise r.fail(f"ivfpq code size {code_size}")
    _inverted_lists(r, nlist, int(code_size), ntotal)


def _ivf_flat(r: _Reader, dim: int, ntotal: int, depth: int) -> None:
    nlist = _ivf_header(r, dim, depth)
    _inverted_lists(r, nlist, 4 * dim, ntotal)


def _ivf_sq(r: _Reader, dim: int, ntotal: int, depth: int) -> None:
    nlist = _ivf_header(r, dim, depth)
    code_size = _scalar_quantizer(r, dim)
    if r.unpack("Q", "ivfsq code_size") != code_size:
        raise r.fail("ivfsq code size differs from its quantizer")
    r.unpack("B", "ivfsq by_residual")
    _inverted_lists(r, nlist, code_size, ntotal)


def _hnsw(r: _Reader, dim: int, ntotal: int, depth: int) -> None:
    probas = r.vector(8, "hnsw assign_probas")
    n_levels = len(probas) // 8
    cum = np.frombuffer(r.vector(4, "hnsw cum_nneighbor_per_level"), dtype="<i4")
    levels = np.frombuffer(r.vector(4, "hnsw levels", expected=ntotal), dtype="<i4")
    offsets = np.frombuffer(r.vector(8, "hnsw offsets", expected=ntotal + 1), dtype="<u8")
    neighbors = np.frombuffer(r.vector(4, "hnsw neighbors"), dtype="<i4")
    entry = r.unpack("i", "hnsw entry_point")
    max_level = r.unpack("i", "hnsw max_level")
    r.unpack("i", "hnsw efConstruction")
    r.unpack("i", "hnsw efSearch")
    r.unpack("i", "hnsw upper_beam")
    if (
        len(cum) != n_levels + 1
        or (np.diff(cum) < 0).any()
        or (levels < 1).any()
        or (levels > n_levels).any()
        or offsets[0] != 0
        or (np.diff(offsets.astype(np.int64)) < 0).any()
        or int(offsets[-1]) != len(neighbors)
        or (neighbors < -1).any()
        or (neighbors >= ntotal).any()
        or not (ntotal == 0 and entry == -1 or 0 <= entry < ntotal)
        or not -1 <= max_level < n_levels
        or (ntotal and (levels[entry] != max_level + 1))
    ):
        raise r.fail("hnsw graph is inconsistent (levels, offsets, neighbour ids or entry point)")
    cum_at = cum[np.clip(levels, 0, n_levels)].astype(np.int64)
    if ntotal and (np.diff(offsets.astype(np.int64)) != cum_at).any():
        raise r.fail("hnsw neighbour lists do not match the levels")
    _, s_dim, s_total = _index(r, depth + 1)
    if s_dim != dim or s_total != ntotal:
        raise r.fail("hnsw storage differs from the graph")


def _pretransform(r: _Reader, dim: int, ntotal: int, depth: int) -> None:
    n_transforms = r.unpack("i", "pretransform chain length")
    if not 1 <= n_transforms <= 4:
        raise r.fail(f"{n_transforms} vector transforms")
    d_in = dim
    for _ in range(n_transforms):
        d_in = _vector_transform(r, d_in)
    _, s_dim, s_total = _index(r, depth + 1)
    if s_dim != d_in or s_total != ntotal:
        raise r.fail("pre-transformed index differs from its transform")


def _vector_transform(r: _Reader, d_in: int) -> int:
    """Read one PCA / random-rotation transform taking `d_in`-d vectors; returns d_out."""
    kind = r.fourcc()
    if kind == b"Pcam":
        r.unpack("f", "pca eigen_power")
        r.unpack("f", "pca epsilon")
        r.unpack("B", "pca random_rotation")
        r.unpack("i", "pca balanced_bins")
        r.vector(4, "pca mean")
        r.vector(4, "pca eigenvalues")
        r.vector(4, "pca matrix")
    elif kind != b"rrot":
        raise r.fail(f"vector transform {kind!r} is not one this runtime checks")
    r.unpack("B", "transform have_bias")
    a_len = r.unpack("Q", "transform A length")
    if a_len * 4 > r.remaining():
        raise r.fail(f"transform matrix of {a_len} floats")
    r.take(a_len * 4, "transform A")
    b_len = r.unpack("Q", "transform b length")
    r.take(b_len * 4, "transform b")
    got_in = r.unpack("i", "transform d_in")
    d_out = r.unpack("i", "transform d_out")
    r.unpack("B", "transform is_trained")
    if got_in != d_in or not 0 < d_out <= _MAX_DIM or a_len not in (0, d_in * d_out):
        raise r.fail(f"transform {got_in} -> {d_out} with a {a_len}-float matrix")
    if b_len not in (0, d_out):
        raise r.fail(f"transform bias of {b_len} floats for {d_out} outputs")
    return int(d_out)
