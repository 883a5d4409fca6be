"""Sensor (window) bundles in `edgead predict` and `edgead run`: rows in, one verdict per row."""

from __future__ import annotations

import itertools
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgead.cli._common import err_console

if TYPE_CHECKING:
    from edgead.runtime.rows_source import SensorRow


def is_window_bundle(path: Path, trusted_keys: list[str] | None = None) -> bool:
    """True when the bundle at `path` scores windows of sensor rows (post-processing "window");
    with `trusted_keys` its signature is checked first."""
    from edgead.bundle import read_bundle
    from edgead.ops.scoring import WINDOW_KINDS

    manifest = read_bundle(path, trusted_keys=trusted_keys).manifest
    return manifest.postprocess.get("kind") in WINDOW_KINDS


def predict_series(det: Any, inputs: list[str], label_column: str | None) -> list[dict[str, Any]]:
    """Per-row results of one recording (.csv/.parquet) or JSON lines on stdin ('-').

    A row gets a result once a full window ends at it (the first window - 1 rows get none).
    """
    from edgead.data.timeseries import load_series
    from edgead.errors import DataError
    from edgead.runtime.rows_source import jsonl_rows, run_rows

    names = det.manifest.input.feature_names
    items: list[dict[str, Any]] = []
    if inputs == ["-"]:
        summary = run_rows(det, jsonl_rows(sys.stdin, names), items.append)
        if summary.corrupt:
            raise DataError(f"{summary.corrupt} stdin line(s) could not be used (see the log)")
        for item in items:
            item["item"] = f"stdin:{item['row'] + 1}"
        return items
    if len(inputs) != 1:
        raise DataError("window bundles take one recording (.csv/.parquet) or '-' for stdin")
    series = load_series(
        inputs[0], label_column=label_column, feature_columns=list(names) if names else None
    )
    scores = det.score_series(series.values)
    for i, row in enumerate(scores.rows):
        items.append(
            {
                "item": f"{inputs[0]}:{int(row)}",
                "row": int(row),
                "time": None if series.times is None else str(series.times[row]),
                "raw_score": float(scores.raw_scores[i]),
                "score": float(scores.scores[i]),
                "is_anomaly": bool(scores.is_anomaly[i]),
            }
        )
    return items


def run_rows_command(
    model: Path,
    source: str,
    *,
    device: str,
    backend: str | None,
    threads: int | None,
    out: Path | None,
    max_rows: int | None,
    rate_hz: float | None,
    trusted_keys: list[str] | None = None,
    sink_factories: Sequence[Callable[[str], Any]] = (),
) -> None:
    """`edgead run BUNDLE --source FILE.csv|-|mqtt://host:port/topic`: replay a recording (at
    --fps rows/s), read JSON lines on stdin or one JSON row per MQTT message, push rows into
    the bundle's ring buffer, write one JSON line per scored row (stdout, or OUT/results.jsonl
    plus OUT/summary.json) with the run id and a sequence number, and hand the same record to
    every sink (`sink_factories`, called with the run id: --mqtt / --webhook outputs)."""
    from edgead._io import write_json_atomic
    from edgead.runtime import Detector
    from edgead.runtime.loop import JsonlWriter, stop_on_signals
    from edgead.runtime.results import new_run_id
    from edgead.runtime.rows_source import run_rows

    stop = threading.Event()
    run_id = new_run_id()
    with Detector.load(
        model, device=device, backend=backend, threads=threads, trusted_keys=trusted_keys
    ) as det:
        names = det.manifest.input.feature_names
        rows = _row_source(source, names, rate_hz, stop)
        writer = JsonlWriter(
            None if out is None else out / "results.jsonl", sys.stdout if out is None else None
        )
        sinks = [factory(run_id) for factory in sink_factories]
        seq = itertools.count()

        def emit(result: dict[str, Any]) -> None:
            record = {"run_id": run_id, "seq": next(seq), **result}
            writer.write(record)
            for sink in sinks:
                sink.publish(record)

        try:
            with stop_on_signals(stop):
                summary = run_rows(det, rows, emit, max_rows=max_rows, stop_event=stop)
        finally:
            writer.close()
            for sink in sinks:
                sink.close()
        record = {**summary.to_dict(), "backend": det.backend, "source": source, "run_id": run_id}
    if out is not None:
        write_json_atomic(out / "summary.json", record)
    err_console.print(
        f"[bold]{summary.stop_reason}[/]: read {summary.read}, scored {summary.scored}, "
        f"warming up {summary.waiting}, corrupt {summary.corrupt}, anomalies "
        f"{summary.anomalies}; backend {record['backend']}",
        highlight=False,
    )


def _row_source(
    source: str, names: Sequence[str] | None, rate_hz: float | None, stop: threading.Event
) -> Iterator[SensorRow]:
    """The rows of `source`: '-' = JSON lines on stdin, mqtt(s):// = an MQTT topic (until
    Ctrl-C / SIGTERM or --max-frames), else a recording replayed at `rate_hz`."""
    from edgead.runtime.mqtt_rows import is_mqtt_source, mqtt_rows
    from edgead.runtime.rows_source import jsonl_rows

    if source == "-":
        return jsonl_rows(sys.stdin, names)
    if is_mqtt_source(source):
        return mqtt_rows(source, names, stop_event=stop)
    return csv_replay(source, names, rate_hz)


def csv_replay(
    path: str | Path,
    feature_names: Sequence[str] | None,
    rate_hz: float | None = None,
    time_column: str | None = "auto",
) -> Iterator[SensorRow]:
    """Rows of a sensor .csv/.parquet file in order, at `rate_hz` rows per second.

    The file is read and checked up front by `edgead.data.timeseries.load_series` (delimiter
    detected; the bundle's feature columns picked by name when it records them).

    Raises:
        DataError: unreadable file, missing feature columns, bad values.
    """
    from edgead.data.timeseries import load_series
    from edgead.runtime.rows_source import SensorRow, paced

    series = load_series(
        path,
        time_column=time_column,
        feature_columns=list(feature_names) if feature_names else None,
    )
    times = series.times

    def rows() -> Iterator[SensorRow]:
        for i, values in enumerate(series.values):
            yield SensorRow(i, None if times is None else str(times[i]), values)

    return paced(rows(), rate_hz)
