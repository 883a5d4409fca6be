"""`edgead build-engine MODEL.edgead`: build the TensorRT engine cached beside a bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgead.cli._common import (
    TRUSTED_KEY_HELP,
    console,
    err_console,
    handle_errors,
    trusted_keys_or_none,
)


@handle_errors
def build_engine(
    bundle: Annotated[
        Path,
        typer.Argument(
            help="Bundle exported with --target tensorrt.",
            exists=True,
            dir_okay=False,
            resolve_path=True,
        ),
    ],
    rebuild: Annotated[
        bool, typer.Option(help="Build even when a valid cached engine exists.")
    ] = False,
    trusted_key: Annotated[
        list[Path] | None,
        typer.Option("--trusted-key", help=TRUSTED_KEY_HELP, exists=True, dir_okay=False),
    ] = None,
) -> None:
    """Build the TensorRT engine for this GPU, check it against the bundle's reference outputs,
    and cache it next to the bundle (a failing engine is refused, not cached)."""
    from edgead.bundle import read_bundle
    from edgead.runtime.backends.tensorrt import (
        TensorRtBackend,
        build_checked_engine,
        build_settings,
    )
    from edgead.runtime.reference import check_reference, has_reference

    verified = read_bundle(bundle, trusted_keys=trusted_keys_or_none(trusted_key))
    settings, _ = build_settings(verified)
    engine, path, check = build_checked_engine(verified, rebuild=rebuild)
    if check is None and has_reference(verified.manifest):  # a cached engine: check it too
        backend = TensorRtBackend(engine, precision=str(settings["precision"]))
        try:
            check = check_reference(verified, backend)
        finally:
            backend.close()
    console.print(f"TensorRT engine ({settings['precision']}, {len(engine) / 1e6:.1f} MB): {path}")
    if check is None:
        err_console.print(
            "[yellow]not checked: the bundle carries no reference outputs; re-export it[/]"
        )
    else:
        console.print(
            f"reference check passed: max relative error {check.max_rel_err:.3g} "
            f"(tolerance {check.tolerance:g}, {check.precision}, {check.n_items} inputs)"
        )
