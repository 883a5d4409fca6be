"""The progress callback type shared by every long loop (training, evaluation, export)."""

from __future__ import annotations

from collections.abc import Callable

#: progress(done, total, description) callback used by long loops; the CLI draws bars from it.
Progress = Callable[[int, int, str], None]


def no_progress(done: int, total: int, description: str) -> None:
    """A progress callback that does nothing."""
