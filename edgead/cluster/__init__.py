"""Scoring beyond one station: batch re-scoring of image archives and an HTTP scoring service.

    edgead.cluster.batch      inputs, the per-batch scorer, resumable Parquet results (no Ray)
    edgead.cluster.ray_batch  the same scorer as a Ray Data actor pool (imports ray)
    edgead.cluster.service    the scoring service and its one-process HTTP server (no Ray)
    edgead.cluster.ray_serve  the same service as a Ray Serve deployment (imports ray)

`edgead.runtime` never imports this package, and only the `ray_*` modules import Ray (the
optional extra `edgead[cluster]`); the CLI imports them lazily, inside `--ray` code paths.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def require_module(name: str, purpose: str) -> ModuleType:
    """Import `name`; BackendUnavailableError with the install hint of `edgead[cluster]`.

    Args:
        name: module to import, e.g. "ray" or "pyarrow.parquet".
        purpose: what needs it, for the message (e.g. "--ray").
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        from edgead.errors import BackendUnavailableError

        raise BackendUnavailableError(
            f"{purpose} needs {name.split('.')[0]}, which is not installed ({exc}); install "
            "it with `pip install 'edgead[cluster]'`"
        ) from exc
