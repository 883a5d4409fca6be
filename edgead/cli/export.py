"""`edgead export` (placeholder: being written)."""

from __future__ import annotations

import typer


def export() -> None:
    """Not written yet."""
    raise typer.Exit(code=1)
