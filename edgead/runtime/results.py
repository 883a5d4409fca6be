"""The one JSON result record of `edgead run`: results.jsonl, MQTT and webhooks carry the same.

Schema "edgead.result/1" (one JSON object per frame read and not dropped; docs/station.md):

    schema        "edgead.result/1"
    run_id        id of the run (UTC start time + random suffix); unique across restarts
    seq           0-based number of the record within its run (the order of decisions)
    frame         0-based index of the frame in the source since the run started
    source        file name for folder sources; null for cameras, streams and video files
                  (there `frame` is the position)
    ts            capture time, ISO 8601 UTC with milliseconds
    status        "ok" (scored) or "corrupt" (could not be scored: see `error`)
    raw_score     detector units (null when not scored)
    score         0..1, 0.5 at the threshold (null when not scored or uncalibrated)
    is_anomaly    true / false; null when not scored or the bundle has no threshold
    threshold     raw-score threshold in use (null when uncalibrated)
    latency_ms    {"queue", "preprocess", "graph", "search", "postprocess", "score", "total"}
    image         optional: path of the saved overlay, relative to the output folder
    error         optional: why the frame was not scored (status "corrupt")

A reject gate must treat `status != "ok"` (or `is_anomaly` null) as "not inspected".
"""

from __future__ import annotations

import math
import secrets
from datetime import datetime, timezone
from typing import Any

RESULT_SCHEMA = "edgead.result/1"
RESULT_KEYS = (
    "schema",
    "run_id",
    "seq",
    "frame",
    "source",
    "ts",
    "status",
    "raw_score",
    "score",
    "is_anomaly",
    "threshold",
    "latency_ms",
)


def new_run_id() -> str:
    """A run id: UTC start time to the second plus 6 random hex digits, e.g.
    20261201T162809Z-3fa91c (sorts by start time, unique across restarts)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def finite_or_none(value: float | None) -> float | None:
    """`value` as float, or None when None/NaN/inf (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def result_record(
    *,
    run_id: str,
    seq: int,
    frame: int,
    source: str | None,
    timestamp: float,
    threshold: float | None,
    raw_score: float | None = None,
    score: float | None = None,
    is_anomaly: bool | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """A result record with every key of the schema (latency_ms empty, filled by the caller).

    Args:
        timestamp: capture time, seconds since the epoch.
        error: set for a frame that was not scored (status "corrupt").
    """
    record: dict[str, Any] = {
        "schema": RESULT_SCHEMA,
        "run_id": run_id,
        "seq": int(seq),
        "frame": int(frame),
        "source": source,
        "ts": datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds"),
        "status": "ok" if error is None else "corrupt",
        "raw_score": finite_or_none(raw_score),
        "score": finite_or_none(score),
        "is_anomaly": None if is_anomaly is None else bool(is_anomaly),
        "threshold": finite_or_none(threshold),
        "latency_ms": {},
    }
    if error is not None:
        record["error"] = error
    return record
