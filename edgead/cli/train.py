"""`edgead train` (placeholder: being written)."""

from __future__ import annotations

import typer


def train() -> None:
    """Not written yet."""
    raise typer.Exit(code=1)
