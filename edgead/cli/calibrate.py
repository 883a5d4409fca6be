"""`edgead calibrate BUNDLE --good DIR [--defects DIR] [--target-fpr F | --policy P] --out NEW`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgead.cli._common import (
    TRUSTED_KEY_HELP,
    console,
    handle_errors,
    print_json,
    progress_bars,
    trusted_keys_or_none,
)


@handle_errors
def calibrate(
    bundle: Annotated[
        Path,
        typer.Argument(
            help="Image bundle (.edgead) to calibrate.",
            exists=True,
            dir_okay=False,
            resolve_path=True,
        ),
    ],
    good: Annotated[Path, typer.Option("--good", help="Folder of good parts from the station.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The calibrated bundle to write.")],
    defects: Annotated[
        Path | None, typer.Option("--defects", help="Folder of defective parts (optional).")
    ] = None,
    target_fpr: Annotated[
        float | None,
        typer.Option("--target-fpr", help="Flag about this share of good parts, e.g. 0.01."),
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option(help="f1 (needs --defects) or percentile:P (default percentile:99)."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | gpu | npu")] = "cpu",
    threads: Annotated[int | None, typer.Option(help="CPU threads for graph and search.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
    trusted_key: Annotated[
        list[Path] | None,
        typer.Option("--trusted-key", help=TRUSTED_KEY_HELP, exists=True, dir_okay=False),
    ] = None,
) -> None:
    """Re-fit threshold and normalisation on site; graphs and index are copied unchanged."""
    from edgead.calibrate import calibrate_bundle

    with progress_bars(not json_out) as progress:
        record = calibrate_bundle(
            bundle,
            good,
            out,
            defects=defects,
            policy=policy,
            target_fpr=target_fpr,
            device=device,
            threads=threads,
            progress=progress,
            trusted_keys=trusted_keys_or_none(trusted_key),
        )
    if json_out:
        print_json({"bundle": str(out), **record})
        return
    old = record["old_threshold"]
    lines = [
        f"calibrated -> {out}",
        f"threshold {'none' if old is None else f'{old:.6g}'} -> {record['new_threshold']:.6g} "
        f"({record['policy']})",
        f"{record['n_good']} good: {record['fpr_on_good']:.1%} flagged",
    ]
    if "recall_on_defects" in record:
        lines.append(f"{record['n_defects']} defective: {record['recall_on_defects']:.1%} flagged")
    console.print("\n".join(lines), highlight=False)
