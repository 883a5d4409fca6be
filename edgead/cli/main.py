"""`edgead` command line: one module per command, joined here.

Heavy imports stay inside the command functions.
"""

from __future__ import annotations

import logging

import typer

from edgead import __version__
from edgead.cli import batch as batch_cmd
from edgead.cli import (
    bench,
    build_engine,
    calibrate,
    demo,
    devices,
    export,
    predict,
    run,
    sign,
    train,
)
from edgead.cli import eval as eval_cmd
from edgead.cli import serve as serve_cmd

app = typer.Typer(
    name="edgead",
    help="Train anomaly detectors on normal data, export them, and run them on edge devices.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


@app.callback()
def _callback(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Log warnings and errors only."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    """Install one rich log handler on the `edgead` logger (other libraries keep theirs)."""
    if version:
        typer.echo(__version__)
        raise typer.Exit()
    from edgead.cli._common import configure_logging

    configure_logging(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)


app.command("train")(train.train)
app.command("eval")(eval_cmd.eval_command)
app.command("export")(export.export)
app.command("calibrate")(calibrate.calibrate)
app.command("build-engine")(build_engine.build_engine)
app.command("predict")(predict.predict)
app.command("run")(run.run)
app.command("bench")(bench.bench)
app.command("devices")(devices.devices)
app.command("demo")(demo.demo)
app.command("batch")(batch_cmd.batch)
app.command("serve")(serve_cmd.serve)
app.command("keygen")(sign.keygen)
app.command("sign")(sign.sign)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
