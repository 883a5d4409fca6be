"""`edgead train NAME --data DIR_OR_FILE_OR_elpv --out RUN [options]`: fit, calibrate, save."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgead.cli._common import console, handle_errors, print_json, progress_bars

#: Named options -> detector config keys (an option the detector lacks is a ConfigError).
_OPTION_KEYS = {
    "--backbone": "backbone",
    "--image-size": "image_size",
    "--coreset-ratio": "coreset_ratio",
    "--epochs": "epochs",
}


def build_overrides(
    name: str, config_file: Path | None, sets: list[str], options: dict[str, Any]
) -> dict[str, Any]:
    """Detector config overrides: TOML file, then --set KEY=VALUE, then named options.

    Raises:
        ConfigError: unknown detector, or a named option the detector's config does not have
            (unknown TOML / --set keys are rejected later by the config's from_dict).
    """
    import dataclasses

    from edgead.config import load_toml, parse_overrides
    from edgead.errors import ConfigError
    from edgead.models.base import get_detector_class

    cls = get_detector_class(name)
    fields = {f.name for f in dataclasses.fields(cls.config_cls)}
    overrides: dict[str, Any] = dict(load_toml(config_file)) if config_file else {}
    overrides.update(parse_overrides(sets))
    for flag, value in options.items():
        if value is None:
            continue
        key = _OPTION_KEYS[flag]
        if key not in fields:
            raise ConfigError(
                f"{flag} does not apply to '{cls.name}': its config has no "
                f"'{key}' (keys: {', '.join(sorted(fields))})"
            )
        overrides[key] = value
    return overrides


@handle_errors
def train(
    name: Annotated[
        str, typer.Argument(help="Detector: patchcore, padim, fastflow, ae, iforest, ...")
    ],
    data: Annotated[
        str,
        typer.Option(
            "--data", help="MVTec-layout folder, 'elpv', or a table (.npz/.csv/.parquet)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to write.")],
    backbone: Annotated[str | None, typer.Option(help="Backbone (image detectors).")] = None,
    image_size: Annotated[int | None, typer.Option(help="Square input size in px.")] = None,
    coreset_ratio: Annotated[
        float | None, typer.Option(help="PatchCore: share of patches kept in the memory bank.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs (trained detectors).")] = None,
    seed: Annotated[int, typer.Option(help="Seeds the splits and the fit.")] = 0,
    label_column: Annotated[
        str | None,
        typer.Option(help="Label column of a .csv/.parquet table (0 = normal, 1 = anomaly)."),
    ] = None,
    val_data: Annotated[
        str | None,
        typer.Option(
            help="Labelled validation data: threshold = best F1 on it instead of the 99th "
            "percentile of held-out normal scores."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="TOML file of detector config keys.", exists=True, dir_okay=False
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Detector config KEY=VALUE (repeatable), e.g. --set pretrained=false."
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print run.json as JSON.")] = False,
) -> None:
    """Train a detector on normal data, set its threshold on held-out normal data, save the run."""
    from edgead.models.base import canonical_name
    from edgead.training import train_run

    name = canonical_name(name)
    overrides = build_overrides(
        name,
        config,
        set_ or [],
        {
            "--backbone": backbone,
            "--image-size": image_size,
            "--coreset-ratio": coreset_ratio,
            "--epochs": epochs,
        },
    )
    with progress_bars(not json_out) as progress:
        meta = train_run(
            name,
            data,
            out,
            overrides,
            seed=seed,
            label_column=label_column,
            val_data=val_data,
            progress=progress,
        )
    if json_out:
        print_json(meta)
        return
    from rich.table import Table

    table = Table(title=f"trained {meta['detector']} -> {meta['run_dir']}", show_header=False)
    info = meta["data"]
    table.add_row(
        "data",
        f"{info.get('spec')}: {info.get('n_train')} fit, "
        f"{info.get('n_val')} held out for the threshold",
    )
    for key, value in (meta.get("describe") or {}).items():
        table.add_row(key, str(value))
    thr = meta["threshold"]
    table.add_row("threshold", f"{thr['value']:.4g} ({thr['policy']})")
    source = (meta.get("validation") or {}).get("source")
    if source:
        table.add_row("threshold scores", str(source))
    table.add_row("timings", ", ".join(f"{k} {v:.1f}" for k, v in meta["timings_s"].items()))
    console.print(table)
