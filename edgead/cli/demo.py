"""`edgead demo [--out DIR]`: PatchCore on the ELPV solar cells, trained and evaluated end to end.

A capped, seeded ELPV split keeps the demo well under 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgead.cli._common import console, handle_errors, print_json, progress_bars

#: Demo split: training cells (defect-free) and test cells (defect-free + defective), seeded.
DEMO_MAX_TRAIN = 160
DEMO_MAX_TEST = 240
DEMO_IMAGE_SIZE = 256
DEMO_N_EXTREMES = 3


@handle_errors
def demo(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the run, panels, metrics.")
    ] = Path("edgead-demo"),
    max_train: Annotated[int, typer.Option(help="Defect-free training cells.")] = DEMO_MAX_TRAIN,
    max_test: Annotated[int, typer.Option(help="Test cells (good + defective).")] = DEMO_MAX_TEST,
    seed: Annotated[int, typer.Option(help="Seeds the hold-out and the coreset.")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Train PatchCore on ELPV solar cells, evaluate it, and save heat-map panels."""
    import time

    from edgead._io import write_json_atomic
    from edgead.cli.eval import results_table
    from edgead.evaluation import evaluate_run
    from edgead.training import train_run

    out = out.expanduser().resolve()
    options = {"max_train": max_train, "max_test": max_test}
    run_dir, panels_dir = out / "run", out / "panels"
    t0 = time.perf_counter()
    if not json_out:
        console.print(
            f"[bold]edgead demo[/]: PatchCore (efficientnet_lite0, {DEMO_IMAGE_SIZE} px, "
            f"10 % coreset) on ELPV solar cells: {max_train} defect-free cells to "
            f"train, {max_test} cells to test"
        )
    with progress_bars(not json_out) as progress:
        meta = train_run(
            "patchcore",
            "elpv",
            run_dir,
            {"image_size": DEMO_IMAGE_SIZE},
            seed=seed,
            data_options=options,
            progress=progress,
        )
        result = evaluate_run(
            run_dir,
            "elpv",
            save_maps=panels_dir,
            maps_selection="extremes",
            n_extremes=DEMO_N_EXTREMES,
            data_options=options,
            progress=progress,
        )
    result["total_s"] = time.perf_counter() - t0
    result["train_timings_s"] = meta["timings_s"]
    write_json_atomic(out / "metrics.json", result)
    if json_out:
        print_json(result)
        return
    console.print(results_table(result, title="PatchCore on ELPV (test split)"))
    console.print(
        f"run directory:  {run_dir}   (export it: edgead export {run_dir} "
        f"--out {out / 'patchcore.edgead'})"
    )
    console.print(f"metrics:        {out / 'metrics.json'}")
    console.print(f"heat-map panels ({len(result.get('panels', []))}): {panels_dir}")
    console.print(
        f"  the {DEMO_N_EXTREMES} highest-scored defective and defect-free cells and the "
        f"{DEMO_N_EXTREMES} lowest-scored defective ones; names start with tp/fp/fn/tn "
        "at the run's threshold"
    )
    console.print(f"total time:     {result['total_s']:.0f} s")
