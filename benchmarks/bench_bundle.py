"""Benchmark bundles on every backend of this machine; the script form of `edgead bench`.

    .venv/bin/python benchmarks/bench_bundle.py MODEL.edgead [MODEL_FP16.edgead] \
        --data ../shared/datasets/mpdd_metal_plate --batch 1,4,8 --frames 50

Writes benchmarks/results/bench-<UTC time>.json (or --json), with --plot a PNG chart and with
--markdown a table; prints
the same side-by-side table as `edgead bench`. The measuring code is `edgead.bench`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run `edgead.bench.bench_bundles`, print the table, write JSON/PNG."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--data", default=None)
    parser.add_argument("--backends", default="all")
    parser.add_argument("--batch", default="1")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--no-isolate", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    from edgead.bench import bench_bundles, render_chart, render_markdown, write_report
    from edgead.cli.bench import render_table

    report = bench_bundles(
        [str(m) for m in args.models],
        backends=[b for b in args.backends.split(",") if b],
        batches=tuple(int(b) for b in args.batch.split(",") if b),
        threads=args.threads,
        frames=args.frames,
        warmup=args.warmup,
        data=args.data,
        isolate=not args.no_isolate,
    )
    render_table(report)
    out = write_report(report, args.json, Path(__file__).resolve().parent / "results", "bench")
    logging.info("wrote %s", out)
    if args.plot:
        logging.info("wrote %s", render_chart(report, args.plot))
    if args.markdown:
        args.markdown.write_text(render_markdown(report))
        logging.info("wrote %s", args.markdown)
    return 0 if any(r.get("status") == "ok" for r in report["results"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
