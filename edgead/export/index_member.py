"""Backward-compatible alias: the index member is built by `edgead.export.index`.

`build_index_member(bank, options, validation=...)` returns (faiss bytes, IndexSpec, report) and
refuses re-ranking (its fp16 array must be written too); the exporter calls
`edgead.export.index.build_index`, which also returns those arrays.
"""

from __future__ import annotations

from edgead.export.index import INDEX_FILE, build_index_member

__all__ = ["INDEX_FILE", "build_index_member"]
