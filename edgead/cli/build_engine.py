"""`edgead build-engine` (placeholder: being written)."""

from __future__ import annotations

import typer


def build_engine() -> None:
    """Not written yet."""
    raise typer.Exit(code=1)
