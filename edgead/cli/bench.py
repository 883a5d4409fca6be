"""`edgead bench` (placeholder: being written)."""

from __future__ import annotations

import typer


def bench() -> None:
    """Not written yet."""
    raise typer.Exit(code=1)
