"""`edgead build-engine MODEL.edgead`: build the TensorRT engine cached beside a bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgead.cli._common import TRUSTED_KEY_HELP, console, handle_errors, trusted_keys_or_none


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
    """Build the TensorRT engine for this GPU and cache it next to the bundle."""
    from edgead.bundle import read_bundle
    from edgead.runtime.backends.tensorrt import DEFAULT_BUILD, load_or_build_engine

    verified = read_bundle(bundle, trusted_keys=trusted_keys_or_none(trusted_key))
    manifest = verified.manifest
    settings = {
        **DEFAULT_BUILD,
        "precision": manifest.precision,
        **manifest.build.get("tensorrt", {}),
    }
    shape = tuple(1 if d is None else int(d) for d in manifest.input.shape)
    engine, path = load_or_build_engine(
        verified.path,
        verified.sha256,
        verified.member(manifest.graphs["onnx"]),
        settings,
        shape,
        rebuild=rebuild,
    )
    console.print(f"TensorRT engine ({settings['precision']}, {len(engine) / 1e6:.1f} MB): {path}")
