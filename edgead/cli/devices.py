"""`edgead devices` (placeholder: being written)."""

from __future__ import annotations

import typer


def devices() -> None:
    """Not written yet."""
    raise typer.Exit(code=1)
