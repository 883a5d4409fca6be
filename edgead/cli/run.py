"""`edgead run` (placeholder: being written)."""

from __future__ import annotations

import typer


def run() -> None:
    """Not written yet."""
    raise typer.Exit(code=1)
