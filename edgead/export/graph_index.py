"""Exact nearest-neighbour search inside the exported graph (`--index graph`). Export side.

`InGraphSearch` wraps a detector's patch embedder (uint8 images -> "embedding" (B, P, D)) and
appends an exact L2 search against the memory bank, held as graph constants:

    q, B    = embedding, bank, both centred on the bank mean (Sub)
    d2(q, b) = ||q||^2 + (q @ (-2 B^T) + ||b||^2)      MatMul + Add, per bank chunk
    best    = ReduceMin over the chunk (TopK when k > 1), then over the chunks
    dist    = Sqrt(Max(best + ||q||^2, 0))              "patch_distances" (B, P, k), L2

so ONNX Runtime, OpenVINO and TensorRT run the search on their own matrix kernels, in the graph's
precision. The bank is split into chunks of at most `CHUNK_ROWS` rows: no (P, M) distance matrix
larger than P x CHUNK_ROWS exists at export or at run time (50,000 x 152 banks export in a few
hundred MiB; anomalib's single `cdist` runs out of memory there, its issues #967 / #1224 / #1286).
The bank norms are computed once, in float64, at export.

The runtime turns "patch_distances" into scores and maps with the same post-processing as the
faiss path (`edgead.runtime.detector.Detector._image_scores`): one scorer for both.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from edgead.errors import ExportError
from edgead.models.base import ExportSpec
from edgead.ops.scoring import GRAPH_SCORES, IN_GRAPH_DISTANCES

logger = logging.getLogger(__name__)

#: Output name of the in-graph search: float32 (B, P, k) L2 distances, ascending along k.
DISTANCES_OUTPUT = IN_GRAPH_DISTANCES
#: Largest bank chunk one MatMul sees (rows). 784 queries x 8192 x 4 B = 25 MiB per image.
CHUNK_ROWS = 8192


class InGraphSearch(nn.Module):
    """uint8 images -> (patch_distances float32 (B, P, k),): embedder + exact search on `bank`.

    Args:
        embedder: module mapping uint8 (B, S, S, 3) to ("embedding" float32 (B, P, D),).
        bank: float32 (M, D) memory bank.
        k: neighbours kept per patch (1 <= k <= M).
        chunk_rows: bank rows per MatMul chunk.
    """

    def __init__(
        self, embedder: nn.Module, bank: np.ndarray, k: int = 1, chunk_rows: int = CHUNK_ROWS
    ) -> None:
        super().__init__()
        bank64 = np.asarray(bank, dtype=np.float64)
        if bank64.ndim != 2 or len(bank64) == 0 or not np.isfinite(bank64).all():
            raise ExportError(f"memory bank must be a finite (M, D) array; got {bank64.shape}")
        if not 1 <= k <= len(bank64):
            raise ExportError(f"k={k} neighbours but the bank has {len(bank64)} vectors")
        self.embedder = embedder
        self.k = int(k)
        self.n_chunks = 0
        # Distances are shift-invariant: centring on the bank mean shrinks the norms the
        # expansion cancels (less rounding error in fp32, a smaller range for bf16 / int8).
        center = bank64.mean(axis=0)
        bank64 = bank64 - center
        self.register_buffer("center", torch.from_numpy(center.astype(np.float32)))
        for lo in range(0, len(bank64), max(1, int(chunk_rows))):
            part = bank64[lo : lo + chunk_rows]
            weight = torch.from_numpy((-2.0 * part.T).astype(np.float32))  # (D, m)
            norms = torch.from_numpy((part * part).sum(axis=1).astype(np.float32))  # (m,)
            self.register_buffer(f"weight{self.n_chunks}", weight.contiguous())
            self.register_buffer(f"norms{self.n_chunks}", norms)
            self.n_chunks += 1

    def _nearest(self, emb: torch.Tensor, chunk: int) -> torch.Tensor:
        """(B, P, k') smallest ||b||^2 - 2 q.b of one bank chunk (k' = min(k, chunk rows))."""
        weight = getattr(self, f"weight{chunk}")
        partial = torch.matmul(emb, weight) + getattr(self, f"norms{chunk}")
        k = min(self.k, int(weight.shape[1]))
        if k == 1:
            return torch.amin(partial, dim=-1, keepdim=True)
        return torch.topk(partial, k, dim=-1, largest=False, sorted=True).values

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor]:
        """(patch_distances float32 (B, P, k) L2, ascending,) from uint8 (B, S, S, 3)."""
        (emb,) = self.embedder(images)
        emb = emb - self.center
        best = torch.cat([self._nearest(emb, c) for c in range(self.n_chunks)], dim=-1)
        if self.n_chunks > 1:
            if self.k == 1:
                best = torch.amin(best, dim=-1, keepdim=True)
            else:
                best = torch.topk(best, self.k, dim=-1, largest=False, sorted=True).values
        squared = best + (emb * emb).sum(dim=-1, keepdim=True)
        return (torch.sqrt(torch.clamp(squared, min=0.0)),)


def in_graph_spec(spec: ExportSpec, bank: np.ndarray, chunk_rows: int = CHUNK_ROWS) -> ExportSpec:
    """The ExportSpec whose module searches `bank` in the graph (output DISTANCES_OUTPUT).

    Args:
        spec: an image "nn_index" spec whose module outputs ("embedding",).
        bank: float32 (M, D) memory bank (the spec's arrays["memory_bank"]).

    Raises:
        ExportError: the spec is not an image nn_index embedder, or scores with "reweight".
    """
    post = dict(spec.postprocess)
    if post.get("kind") != "nn_index" or tuple(spec.output_names) != ("embedding",):
        raise ExportError(
            "--index graph needs an image nearest-neighbour detector (PatchCore) whose graph "
            f"outputs ('embedding',); this one has kind {post.get('kind')!r} and outputs "
            f"{tuple(spec.output_names)}; use --index flat"
        )
    mode = str(post.get("score", "max"))
    if mode not in GRAPH_SCORES:
        raise ExportError(
            f"--index graph supports the scores {GRAPH_SCORES}; this detector scores with "
            f"{mode!r} (it needs the bank vectors at run time): use --index flat"
        )
    module = InGraphSearch(spec.module, bank, k=int(post.get("k", 1)), chunk_rows=chunk_rows)
    post["search"] = "graph"
    logger.info(
        "in-graph exact search: %d x %d bank in %d chunk(s) of <= %d rows",
        bank.shape[0],
        bank.shape[1],
        module.n_chunks,
        chunk_rows,
    )
    return dataclasses.replace(
        spec,
        module=module.eval(),
        output_names=(DISTANCES_OUTPUT,),
        postprocess=post,
        arrays={k: v for k, v in spec.arrays.items() if k != "memory_bank"},
    )


def graph_index_report(bank: np.ndarray, k: int, chunk_rows: int = CHUNK_ROWS) -> dict[str, Any]:
    """The manifest's export["index"] record of an in-graph exact search (exact: no AUROC loss)."""
    return {
        "name": "graph",
        "factory": "graph:exact-l2",
        "n_vectors": int(bank.shape[0]),
        "dim": int(bank.shape[1]),
        "k": int(k),
        "chunk_rows": int(chunk_rows),
        "n_chunks": -(-int(bank.shape[0]) // int(chunk_rows)),
        "bytes": int(bank.shape[0]) * (int(bank.shape[1]) + 1) * 4,
        "exact": True,
    }
