"""The nearest-neighbour member of a bundle: one function that later index options extend."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from edgead.bundle import IndexSpec
from edgead.errors import ExportError
from edgead.runtime.nn_index import FaissIndex

logger = logging.getLogger(__name__)

INDEX_FILE = "memory_bank.faiss"


def build_index_member(
    bank: np.ndarray, options: dict[str, Any] | None = None
) -> tuple[bytes, IndexSpec, dict[str, Any]]:
    """(faiss index bytes, IndexSpec for the manifest, report) for a memory bank.

    Args:
        bank: float32 (M, D) memory-bank vectors, in the units the graph's "embedding" output has.
        options: {"factory": faiss factory string (default "Flat", exact L2), "k": neighbours}.
            Compressed indexes (edgead/export/index.py) extend this.

    Returns:
        index bytes (faiss's own format, no pickle), the IndexSpec, and a JSON report
        {"factory", "n_vectors", "dim", "bytes", "build_s"}.

    Raises:
        ExportError: the bank is not a finite 2-D float array, or the factory is not "Flat".
    """
    options = dict(options or {})
    factory = str(options.pop("factory", "Flat"))
    k = int(options.pop("k", 1))
    if options:
        raise ExportError(
            f"unknown index options {sorted(options)}; this exporter knows factory, k"
        )
    if factory != "Flat":
        raise ExportError(f"index {factory!r} is not supported yet; only the exact 'Flat' index is")
    bank = np.ascontiguousarray(bank, dtype=np.float32)
    if bank.ndim != 2 or len(bank) == 0 or not np.isfinite(bank).all():
        raise ExportError(
            f"memory bank must be a finite float (M, D) array; got shape {bank.shape}"
        )
    t0 = time.perf_counter()
    index = FaissIndex.build(bank, factory)
    data = index.to_bytes()
    spec = IndexSpec(
        file=INDEX_FILE,
        factory=factory,
        metric="l2",
        dim=int(bank.shape[1]),
        n_vectors=int(bank.shape[0]),
        k=k,
    )
    report = {
        "factory": factory,
        "n_vectors": spec.n_vectors,
        "dim": spec.dim,
        "bytes": len(data),
        "build_s": round(time.perf_counter() - t0, 3),
    }
    logger.info(
        "index %s: %d x %d vectors, %.1f MiB", factory, spec.n_vectors, spec.dim, len(data) / 2**20
    )
    return data, spec, report
