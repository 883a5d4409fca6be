"""Row sources for sensor bundles and the loop that scores them row by row. Torch-free.

    rows = csv_replay("plant.csv", feature_names, rate_hz=1.0)   # or jsonl_rows(sys.stdin, ...),
                                              # or mqtt_rows(url, ...) (edgead.runtime.mqtt_rows)
    summary = run_rows(detector, rows, emit=print_json_line)

A source yields `SensorRow`s (index in the stream, time stamp or None, float32 (D,) values or
None with the reason when the row was unusable). `run_rows` pushes each good row into
`Detector.push` (one ring buffer per stream) and emits one JSON-ready record per scored window:
{"stream", "row", "time", "raw_score", "score", "is_anomaly"} (`edgead run` adds "run_id" and
"seq"). Every row read is exactly one of scored, warming up (the first window - 1 rows, and
rows between strided windows) or corrupt.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import IO, Any

import numpy as np

from edgead.errors import DataError
from edgead.ops.windows import TIME_NAMES

logger = logging.getLogger(__name__)


@dataclass
class SensorRow:
    """One row of a stream: values float32 (D,) or None (then `problem` says why)."""

    index: int
    time: str | None
    values: np.ndarray | None
    problem: str | None = None


@dataclass
class RowsSummary:
    """Counts of a run: read == scored + waiting + corrupt."""

    read: int = 0
    scored: int = 0
    waiting: int = 0
    corrupt: int = 0
    anomalies: int = 0
    stop_reason: str = "end_of_stream"
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def paced(rows: Iterable[SensorRow], rate_hz: float | None) -> Iterator[SensorRow]:
    """Yield rows no faster than `rate_hz` rows per second (None or <= 0: as fast as read)."""
    if not rate_hz or rate_hz <= 0:
        yield from rows
        return
    period = 1.0 / rate_hz
    next_due = time.monotonic()
    for row in rows:
        delay = next_due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        next_due = max(next_due + period, time.monotonic() - period)
        yield row


def jsonl_rows(stream: IO[str], feature_names: Sequence[str] | None) -> Iterator[SensorRow]:
    """Rows from JSON lines (`parse_json_row`). Blank lines are skipped; a bad line yields a
    row with a problem."""
    index = 0
    for line in stream:
        if not line.strip():
            continue
        yield parse_json_row(line, feature_names, index, f"line {index + 1}")
        index += 1


def parse_json_row(
    text: str | bytes, feature_names: Sequence[str] | None, index: int, where: str
) -> SensorRow:
    """One row from a JSON text: a list of D numbers, or an object keyed by the feature names
    (plus an optional time stamp under datetime / timestamp / time / date).

    Args:
        index: the row's index in its stream; where: names it in a problem ("line 3").

    Returns:
        SensorRow with float32 (D,) values, or with values None and `problem` saying why (the
        length and finiteness are checked by `Detector.push`).
    """
    stamp: str | None = None
    try:
        value = json.loads(text)
        if isinstance(value, dict):
            if not feature_names:
                raise DataError("this bundle has no feature names; send rows as JSON lists")
            missing = [n for n in feature_names if n not in value]
            if missing:
                raise DataError(f"missing features {missing}")
            keys = [k for k in value if k.strip().lower() in TIME_NAMES]
            stamp = str(value[keys[0]]) if keys else None
            value = [value[n] for n in feature_names]
        values = np.asarray(value, dtype=np.float32).reshape(-1)
        return SensorRow(index, stamp, values)
    except (ValueError, TypeError, DataError) as exc:
        return SensorRow(index, stamp, None, f"{where}: {exc}")


def run_rows(
    detector: Any,
    rows: Iterable[SensorRow],
    emit: Callable[[dict[str, Any]], None],
    *,
    stream: str = "default",
    max_rows: int | None = None,
    stop_event: threading.Event | None = None,
) -> RowsSummary:
    """Push every row into `detector.push(values, stream)` and emit one record per result.

    Args:
        detector: an `edgead.runtime.Detector` of a window bundle (anything with `push`).
        rows: a row source (`csv_replay`, `jsonl_rows`).
        emit: called with {"stream", "row", "time", "raw_score", "score", "is_anomaly"}.
        max_rows: stop after this many rows read; stop_event: stop when set.
    """
    summary = RowsSummary()
    start = time.perf_counter()
    for row in rows:
        if stop_event is not None and stop_event.is_set():
            summary.stop_reason = "stopped"
            break
        summary.read += 1
        result = None
        if row.values is None:
            summary.corrupt += 1
            logger.warning("row %d skipped: %s", row.index, row.problem)
        else:
            try:
                result = detector.push(row.values, stream)
            except DataError as exc:
                summary.corrupt += 1
                logger.warning("row %d skipped: %s", row.index, exc)
            else:
                summary.waiting += result is None
        if result is not None:
            summary.scored += 1
            summary.anomalies += bool(result.is_anomaly)
            emit(
                {
                    "stream": stream,
                    "row": row.index,
                    "time": row.time,
                    "raw_score": result.raw_score,
                    "score": None if math.isnan(result.score) else result.score,
                    "is_anomaly": result.is_anomaly,
                }
            )
        if max_rows is not None and summary.read >= max_rows:
            summary.stop_reason = "max_rows"
            break
    summary.duration_s = time.perf_counter() - start
    return summary
