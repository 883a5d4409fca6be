"""`edgead eval RUN_OR_BUNDLE --data ... [--json] [--save-maps DIR]`: metrics on labelled data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgead.cli._common import (
    TRUSTED_KEY_HELP,
    console,
    handle_errors,
    print_json,
    progress_bars,
    trusted_keys_or_none,
)


def evaluate_path(
    target: Path,
    data: str | None,
    save_maps: Path | None,
    device: str,
    progress: Any,
    trusted_keys: list[str] | None = None,
) -> dict[str, Any]:
    """Metrics of a run directory (`edgead.evaluation.evaluate_run`) or a `.edgead` bundle file
    (`edgead.evaluation.evaluate_bundle`, signed by one of `trusted_keys` when given); both
    return the same keys."""
    from edgead.errors import ConfigError, DataError

    if target.is_dir() and trusted_keys:
        raise ConfigError(f"--trusted-key checks bundles; {target} is a run directory")
    if target.is_dir():
        from edgead.evaluation import evaluate_run

        return evaluate_run(target, data, save_maps=save_maps, progress=progress)
    if data is None:
        raise DataError(f"{target} is a bundle; pass --data with labelled test data")
    from edgead.evaluation import evaluate_bundle

    return evaluate_bundle(
        target,
        data,
        device=device,
        save_maps=save_maps,
        progress=progress,
        trusted_keys=trusted_keys,
    )


@handle_errors
def eval_command(
    target: Annotated[
        Path,
        typer.Argument(
            help="Run directory (edgead train) or bundle file (.edgead, edgead export).",
            exists=True,
            resolve_path=True,
        ),
    ],
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="Labelled test data: MVTec-layout folder, 'elpv' or a table "
            "(default for a run: the data it was trained on).",
        ),
    ] = None,
    save_maps: Annotated[
        Path | None,
        typer.Option("--save-maps", help="Folder for image | heat-map | mask panels (images)."),
    ] = None,
    device: Annotated[str, typer.Option(help="Bundles only: auto, cpu, cuda, gpu, npu.")] = "cpu",
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    trusted_key: Annotated[
        list[Path] | None,
        typer.Option("--trusted-key", help=TRUSTED_KEY_HELP, exists=True, dir_okay=False),
    ] = None,
) -> None:
    """Evaluate a trained run or an exported bundle on labelled test data."""
    with progress_bars(not json_out) as progress:
        result = evaluate_path(
            target, data, save_maps, device, progress, trusted_keys_or_none(trusted_key)
        )
    if json_out:
        print_json(result)
        return
    console.print(results_table(result, title=f"evaluation of {target.name}"))
    if result.get("panels_dir"):
        n_panels = len(result.get("panels", []))
        console.print(f"panels: {n_panels} PNG files in {result['panels_dir']}")


def results_table(result: dict[str, Any], title: str) -> Any:
    """A rich Table of the scalar metrics in `result`."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    return table
