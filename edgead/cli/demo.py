"""`edgead demo` (placeholder: being written)."""

from __future__ import annotations

import typer


def demo() -> None:
    """Not written yet."""
    raise typer.Exit(code=1)
