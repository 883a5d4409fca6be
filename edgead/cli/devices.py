"""`edgead devices`: this machine, its matching device profile and the backends that work."""

from __future__ import annotations

from typing import Annotated

import typer

from edgead.cli._common import console, handle_errors, print_json


@handle_errors
def devices(
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    profile: Annotated[
        str | None, typer.Option(help="Show this profile instead of the detected one.")
    ] = None,
    list_all: Annotated[bool, typer.Option("--list", help="List the shipped profiles.")] = False,
) -> None:
    """Detect CPU, Jetson / Raspberry Pi model, CUDA and OpenVINO devices; try each backend."""
    from dataclasses import asdict

    from edgead.devices import (
        detect_machine,
        load_all_profiles,
        load_profile,
        match_profile,
        probe_backends,
    )
    from edgead.devices.detect import first_working_backend
    from edgead.devices.install import check_install, installed_versions

    if list_all:
        profiles = load_all_profiles()
        if json_out:
            print_json([asdict(p) for p in profiles])
            return
        from rich.table import Table

        table = Table(title="device profiles")
        table.add_column("name", no_wrap=True)
        for col in ("target", "precision", "threads", "image px", "budget MiB"):
            table.add_column(col)
        table.add_column("backends (preference order)", no_wrap=True)
        for p in profiles:
            table.add_row(
                p.name if p.supported else f"{p.name} [red](unsupported)[/]",
                p.target,
                p.precision,
                str(p.threads or "all"),
                str(p.image_size),
                str(p.memory_budget_mib),
                "\n".join(b.label for b in p.backends),
            )
        console.print(table)
        return

    info = detect_machine()
    chosen = load_profile(profile) if profile else match_profile(info)
    probes = probe_backends(info)
    best = first_working_backend(chosen, probes) if chosen else None
    checks = (
        check_install(
            chosen, installed_versions(), info.ort_providers, tuple(info.openvino_devices)
        )
        if chosen
        else []
    )
    if json_out:
        print_json(
            {
                "machine": info.to_dict(),
                "profile": asdict(chosen) if chosen else None,
                "backends": [asdict(p) for p in probes],
                "selected_backend": best,
                "install_check": [c.to_dict() for c in checks],
            }
        )
        return
    _render(info, chosen, probes, best, explicit=profile is not None)
    if chosen:
        _render_install(chosen, checks)


def _render(info, chosen, probes, best, explicit: bool) -> None:  # type: ignore[no-untyped-def]
    from rich.table import Table

    machine = Table(title="this machine", show_header=False)
    machine.add_column(style="bold")
    machine.add_column()
    rows = [
        ("CPU", f"{info.cpu_model} ({info.cpu_vendor or 'n/a'}), {info.arch}"),
        ("cores", f"{info.logical_cores} logical, {info.usable_cores} usable"),
        ("CPU flags", ", ".join(info.cpu_flags) or "-"),
        ("memory", f"{info.memory_total_mib} MiB"),
        ("device tree", info.device_tree_model or "-"),
        ("CUDA GPUs", ", ".join(info.cuda_gpus) or "none"),
        ("onnxruntime", f"{info.ort_version or 'not installed'} {list(info.ort_providers)}"),
        (
            "openvino",
            f"{info.openvino_version or 'not installed'} "
            f"{list(info.openvino_devices) if info.openvino_devices else ''}",
        ),
        ("tensorrt", info.tensorrt_version or "not installed"),
    ]
    for key, value in rows:
        machine.add_row(key, value)
    console.print(machine)

    table = Table(title="backends on this machine")
    table.add_column("backend", no_wrap=True)
    for col in ("works", "init ms", "detail"):
        table.add_column(col)
    for p in probes:
        table.add_row(
            p.label,
            "[green]yes[/]" if p.works else "[red]no[/]",
            f"{p.init_ms:.0f}" if p.init_ms is not None else "-",
            p.detail,
        )
    console.print(table)

    if chosen is None:
        console.print(
            "[yellow]no shipped profile matches this machine[/]; `edgead devices --list` shows them"
        )
        return
    how = "requested" if explicit else "matching"
    console.print(f"[bold]{how} profile:[/] {chosen.name} - {chosen.description}")
    console.print(
        f"  export: --target {chosen.target} --precision {chosen.precision}; "
        f"image size {chosen.image_size} px; threads {chosen.threads or 'all'}; "
        f"memory budget {chosen.memory_budget_mib} MiB"
    )
    console.print("  preference: " + " > ".join(b.label for b in chosen.backends))
    console.print(f"  [bold]would use:[/] {best or '[red]none of its backends works here[/]'}")


def _render_install(chosen, checks) -> None:  # type: ignore[no-untyped-def]
    """The install check table: what the profile needs, what is here, what to do."""
    from rich.markup import escape
    from rich.table import Table

    if not chosen.supported:
        console.print(f"[bold red]{chosen.name} is not supported:[/] {escape(chosen.notes)}")
    table = Table(title=f"install check for {chosen.name}")
    for col in ("component", "needs", "found", "ok", "what to do"):
        table.add_column(col)
    for c in checks:
        mark = {True: "[green]yes[/]", False: "[red]no[/]", None: "?"}[c.ok]
        table.add_row(c.component, c.needed, c.found or "absent", mark, escape(c.hint))
    console.print(table)
    if chosen.install:
        console.print(
            "  install (README, 'Install on a device'): "
            + " ; ".join(escape(line) for line in chosen.install)
        )
