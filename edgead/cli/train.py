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


def resolve_data(
    data: str | None,
    normal_dir: str | None,
    abnormal_dir: str | None,
    mask_dir: str | None,
    normal_test_dir: str | None,
) -> tuple[str, dict[str, Any]]:
    """(data spec, image loader options) from --data or --normal-dir and its companions.

    Raises:
        ConfigError: neither or both of --data and --normal-dir.
    """
    from edgead.errors import ConfigError

    if (data is None) == (normal_dir is None):
        raise ConfigError(
            "give either --data (an MVTec folder, a folder of good images, 'elpv' or a table) "
            "or --normal-dir (a folder of good images), not both and not neither"
        )
    folders = {"abnormal_dir": abnormal_dir, "mask_dir": mask_dir}
    folders["normal_test_dir"] = normal_test_dir
    options = {key: value for key, value in folders.items() if value is not None}
    return str(data if data is not None else normal_dir), options


def resolve_tiling(
    image_size: str | None, tile: int | None, overlap: float
) -> tuple[int | None, dict[str, Any] | None]:
    """(detector image_size, tiling or None) from --image-size S|H,W, --tile, --tile-overlap.

    S alone: a square input, no tiling. H,W or --tile: frames resized to (H, W) and scored as
    T x T tiles (T = --tile, else min(H, W)); the detector's image_size becomes T.

    Raises:
        ConfigError: malformed size, --tile without a frame size, a tile that does not fit.
    """
    from edgead.errors import ConfigError
    from edgead.ops.tiling import Tiling

    if image_size is None:
        if tile is not None:
            raise ConfigError("--tile needs --image-size (the frame size the tiles are cut from)")
        return None, None
    try:
        parts = [int(v) for v in image_size.replace("x", ",").split(",")]
    except ValueError as exc:
        raise ConfigError(f"--image-size expects S or H,W in px, got {image_size!r}") from exc
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise ConfigError(f"--image-size expects S or H,W in px, got {image_size!r}")
    if len(parts) == 1 and tile is None:
        return parts[0], None
    height, width = (parts[0], parts[0]) if len(parts) == 1 else parts
    tiling = Tiling((height, width), tile or min(height, width), overlap).validate()
    return tiling.tile, tiling.to_dict()


@handle_errors
def train(
    name: Annotated[
        str, typer.Argument(help="Detector: patchcore, padim, fastflow, ae, iforest, ...")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to write.")],
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="MVTec-layout folder (train/good; test/ optional), a folder of good images, "
            "'elpv', or a table (.npz/.csv/.parquet).",
        ),
    ] = None,
    normal_dir: Annotated[
        str | None,
        typer.Option(help="Folder of good images to train on (instead of --data)."),
    ] = None,
    abnormal_dir: Annotated[
        str | None, typer.Option(help="Folder of defective test images (any name).")
    ] = None,
    mask_dir: Annotated[
        str | None, typer.Option(help="Masks of the --abnormal-dir images (<stem>.png).")
    ] = None,
    normal_test_dir: Annotated[
        str | None, typer.Option(help="Folder of good test images (any name).")
    ] = None,
    backbone: Annotated[str | None, typer.Option(help="Backbone (image detectors).")] = None,
    image_size: Annotated[
        str | None,
        typer.Option(
            help="Input size in px: S (square) or H,W (aspect kept: scored as square tiles)."
        ),
    ] = None,
    tile: Annotated[
        int | None,
        typer.Option(help="Score T x T tiles of the --image-size frame (max over tiles)."),
    ] = None,
    tile_overlap: Annotated[
        float, typer.Option(help="Share of a tile its neighbour overlaps, 0..0.9.")
    ] = 0.0,
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
    data_option: Annotated[
        list[str] | None,
        typer.Option(
            "--data-option",
            help="Time-series loader option KEY=VALUE (repeatable): fit_rows=400, "
            "time_column=datetime, feature_columns=a,b, drop_columns=changepoint, delimiter=;",
        ),
    ] = None,
) -> None:
    """Train a detector on normal data, set its threshold on held-out normal data, save the run."""
    from edgead.config import parse_overrides
    from edgead.models.base import canonical_name
    from edgead.training import train_run

    name = canonical_name(name)
    data, data_options = resolve_data(data, normal_dir, abnormal_dir, mask_dir, normal_test_dir)
    square, tiling = resolve_tiling(image_size, tile, tile_overlap)
    overrides = build_overrides(
        name,
        config,
        set_ or [],
        {
            "--backbone": backbone,
            "--image-size": square,
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
            data_options={**data_options, **parse_overrides(data_option or [])} or None,
            progress=progress,
            tiling=tiling,
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
    if meta.get("tiling"):
        tiles = meta["tiling"]
        table.add_row(
            "tiling",
            f"{tiles['tile']} px tiles of {tiles['frame_size'][0]}x{tiles['frame_size'][1]} "
            f"(H x W) frames, overlap {tiles['overlap']:g}",
        )
    thr = meta["threshold"]
    table.add_row("threshold", f"{thr['value']:.4g} ({thr['policy']})")
    source = (meta.get("validation") or {}).get("source")
    if source:
        table.add_row("threshold scores", str(source))
    table.add_row("timings", ", ".join(f"{k} {v:.1f}" for k, v in meta["timings_s"].items()))
    console.print(table)
