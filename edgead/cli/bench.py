"""`edgead bench`: side-by-side latency, throughput, memory and accuracy of bundles per backend."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgead.cli._common import (
    TRUSTED_KEY_HELP,
    console,
    err_console,
    handle_errors,
    progress_bars,
    trusted_keys_or_none,
)


@handle_errors
def bench(
    models: Annotated[
        list[Path],
        typer.Argument(
            help="Bundle(s) (.edgead); several compare side by side (e.g. fp32 and fp16).",
            exists=True,
            dir_okay=False,
            resolve_path=True,
        ),
    ],
    data: Annotated[
        Path | None,
        typer.Option(
            help="MVTec-layout folder: real frames, AUROC and score differences.",
            exists=True,
            file_okay=False,
        ),
    ] = None,
    backends: Annotated[
        str, typer.Option(help="all, or a comma list such as onnxruntime/cpu,openvino/CPU.")
    ] = "all",
    batch: Annotated[str, typer.Option(help="Batch sizes, comma separated.")] = "1",
    threads: Annotated[int | None, typer.Option(help="CPU threads for the backends.")] = None,
    frames: Annotated[int, typer.Option(help="Images timed per batch size.")] = 50,
    warmup: Annotated[int, typer.Option(help="Untimed calls first.")] = 3,
    json_file: Annotated[Path | None, typer.Option("--json", help="Write the report here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG chart here.")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write a markdown table here.")] = None,
    isolate: Annotated[bool, typer.Option(help="One process per backend (clean peak RSS).")] = True,
    trusted_key: Annotated[
        list[Path] | None,
        typer.Option("--trusted-key", help=TRUSTED_KEY_HELP, exists=True, dir_okay=False),
    ] = None,
) -> None:
    """Benchmark bundles on every backend here; table on stdout, JSON and PNG on request."""
    from edgead._io import write_json_atomic
    from edgead.bench import bench_bundles, render_chart, render_markdown
    from edgead.errors import ConfigError

    try:
        batches = tuple(int(b) for b in batch.split(",") if b.strip())
    except ValueError as exc:
        raise ConfigError(f"--batch expects integers such as 1,4,8; got {batch!r}") from exc
    wanted = [b.strip() for b in backends.split(",") if b.strip()]
    with progress_bars() as progress:
        report = bench_bundles(
            [str(m) for m in models],
            backends=wanted,
            batches=batches,
            threads=threads,
            frames=frames,
            warmup=warmup,
            data=str(data) if data else None,
            isolate=isolate,
            progress=progress,
            trusted_keys=trusted_keys_or_none(trusted_key),
        )
    render_table(report)
    if json_file is not None:
        write_json_atomic(json_file, report)
        err_console.print(f"wrote {json_file}")
    if plot is not None:
        err_console.print(f"wrote {render_chart(report, plot)}")
    if markdown is not None:
        from edgead._io import atomic_open

        with atomic_open(markdown, "w") as fh:
            fh.write(render_markdown(report))
        err_console.print(f"wrote {markdown}")
    if not any(r.get("status") == "ok" for r in report["results"]):
        raise typer.Exit(code=1)


def _fmt(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_table(report: dict[str, Any]) -> None:
    """Print the side-by-side table (one column per bundle/backend) and the device line."""
    from rich.table import Table

    from edgead.bench import reference_cell

    dev = report["device"]
    versions = ", ".join(
        f"{k} {v}"
        for k, v in report["versions"].items()
        if v and k in ("onnxruntime", "openvino", "tensorrt", "faiss")
    )
    accelerators = ", ".join(dev["cuda_gpus"]) or "none"
    console.print(
        f"[bold]device:[/] {dev['cpu_model']} ({dev['arch']}, "
        f"{dev['usable_cores']} usable cores), accelerators: {accelerators}; OpenVINO "
        f"devices {list(dev['openvino_devices'])}; profile {dev['profile']}; {versions}",
        highlight=False,
    )
    results = report["results"]
    table = Table(
        title=f"edgead bench ({report['settings']['latency_frames']}, "
        f"threads {report['settings']['threads'] or 'default'})"
    )
    table.add_column("", style="bold", no_wrap=True)
    multi = len({r["bundle"] for r in results}) > 1
    for r in results:
        head = f"{r['label']}\n{r['precision']}" + (f"\n{Path(r['bundle']).name}" if multi else "")
        table.add_column(head, justify="right")

    def row(name: str, fn: Any) -> None:
        table.add_row(name, *[fn(r) if r.get("status") == "ok" else "-" for r in results])

    table.add_row(
        "status",
        *[r["status"] if r["status"] == "ok" else f"[red]{r['status']}[/]" for r in results],
    )
    row("backend used", lambda r: r["backend_used"].split("/")[-1])
    row("load ms", lambda r: _fmt(r["load_ms"], 0))
    for b in report["settings"]["batches"]:
        key = str(b)
        for stage in ("preprocess", "graph", "search", "postprocess"):
            if any(
                stage in r.get("batches", {}).get(key, {}).get("latency_ms", {})
                and r["batches"][key]["latency_ms"][stage]["p50"] > 0
                for r in results
            ):
                row(
                    f"b{b} {stage} p50 ms",
                    lambda r, k=key, s=stage: _fmt(
                        r["batches"][k]["latency_ms"].get(s, {}).get("p50")
                    ),
                )
        for q in ("p50", "p95", "p99"):
            row(
                f"b{b} total {q} ms",
                lambda r, k=key, q=q: _fmt(r["batches"][k]["latency_ms"]["total"][q]),
            )
        row(f"b{b} images/s", lambda r, k=key: _fmt(r["batches"][k]["throughput_ips"], 2))
    row("peak RSS MiB", lambda r: _fmt(r.get("peak_rss_mib"), 0))
    row("reference max rel err", reference_cell)
    if any("image_auroc" in r for r in results):
        row("image AUROC", lambda r: _fmt(r.get("image_auroc"), 4))
        row("AUROC vs bundle", lambda r: _fmt(r.get("image_auroc_delta"), 4))
        row("max |score diff|", lambda r: _fmt(r.get("max_abs_score_diff"), 5))
    console.print(table)
    for r in results:
        if r["status"] != "ok":
            err_console.print(f"[yellow]{r['label']}[/]: {r.get('error')}", highlight=False)
