"""`edgead eval` (placeholder: being written)."""

from __future__ import annotations

import typer


def eval_command() -> None:
    """Not written yet."""
    raise typer.Exit(code=1)
