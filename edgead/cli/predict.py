"""`edgead predict` (placeholder: being written)."""

from __future__ import annotations

import typer


def predict() -> None:
    """Not written yet."""
    raise typer.Exit(code=1)
