"""Shared CLI plumbing: consoles, error mapping, rich progress bars as `Progress` callbacks."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgead.errors import EdgeadError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Decorator: an EdgeadError becomes one red line on stderr and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except EdgeadError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def progress_bars(enabled: bool = True) -> Iterator[Callable[[int, int, str], None]]:
    """Yield a `progress(done, total, description)` callback drawing one rich bar per description.

    Bars go to stderr so `--json` output on stdout stays clean.
    """
    if not enabled:
        yield lambda done, total, description: None
        return
    bars = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )
    tasks: dict[str, Any] = {}

    def update(done: int, total: int, description: str) -> None:
        if description not in tasks:
            tasks[description] = bars.add_task(description, total=total)
        bars.update(tasks[description], completed=done, total=total)

    with bars:
        yield update


def print_json(data: Any) -> None:
    """One JSON object on stdout (no rich markup)."""
    sys.stdout.write(json.dumps(data, indent=2, default=float) + "\n")
    sys.stdout.flush()


def configure_logging(level: int) -> None:
    """Log `edgead.*` records at `level` through one rich handler on stderr.

    Only the `edgead` logger is configured: the root logger (and so faiss's loader and other
    libraries' INFO lines) keeps Python's default (warnings and up, no handler of ours).
    """
    from rich.logging import RichHandler

    log = logging.getLogger("edgead")
    for handler in list(log.handlers):
        if getattr(handler, "_edgead_cli", False):
            log.removeHandler(handler)
    handler = RichHandler(console=err_console, show_path=False, log_time_format="[%X]")
    handler._edgead_cli = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(level)


#: `--trusted-key PUB.pem` (repeatable) on every command that loads a bundle.
TRUSTED_KEY_HELP = (
    "Ed25519 public key (PEM, from `edgead keygen`) the bundle must be signed by; repeatable. "
    "Unsigned or wrongly signed bundles are refused before anything in them is parsed."
)

#: --threshold / --sensitivity, shared by `predict` and `run`.
ThresholdOption = Annotated[
    float | None, typer.Option(help="Decision threshold in raw-score units (override).")
]
SensitivityOption = Annotated[
    float | None,
    typer.Option(help="0..1 instead of --threshold: 0.5 = as calibrated, higher flags more."),
]


def trusted_keys_or_none(keys: list[Any] | None) -> list[str] | None:
    """The --trusted-key paths as strings, or None when none were given (no check)."""
    return [str(k) for k in keys] if keys else None
