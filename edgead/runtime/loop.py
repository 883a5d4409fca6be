"""The inspection loop behind `edgead run`: frames in, decisions out, for weeks. Torch-free.

    capture thread -> bounded queue -> score (Detector) -> results.jsonl, anomalies/*.jpg, status

Outputs (under `out_dir`, or JSON lines on a stream when there is none):
    results.jsonl   one JSON object per frame read and not dropped (schema edgead.result/1,
                    `edgead.runtime.results`; corrupt frames get a "corrupt" line), written as
                    whole lines and flushed each time, fsynced on exit; a partial last line left
                    by a hard kill is trimmed when the file is opened again; rotated to
                    results.jsonl.1, .2, ... by size
    anomalies/      anomalous frames with their heat-map overlay (edgead.ops.overlay.score_panel,
                    JPEG, written atomically), named <run_id>_frame_<index>.jpg
    sinks           the same records to MQTT / webhooks (`edgead.runtime.outputs`)
    summary.json    counts, latencies, backend and fallbacks of the run (written atomically)

Accounting: every frame read is exactly one of scored, dropped or corrupt, so
`scored + dropped + corrupt == read` holds at the end (`RunSummary.accounted`).

Faults: the capture thread reconnects live sources; a frame the detector rejects (DataError) is
counted corrupt; a backend that fails mid-run is replaced by `fallback_factory()` (e.g. the bundle
reloaded on the CPU), the switch is logged and recorded, and the frame is scored again; a stop
request (SIGINT/SIGTERM via `stop_on_signals`) finishes the frame in flight, then flushes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Protocol

import cv2
import numpy as np

from edgead._io import write_bytes_atomic, write_json_atomic
from edgead.errors import BackendUnavailableError, ConfigError, DataError
from edgead.ops.image import to_rgb
from edgead.ops.overlay import score_panel
from edgead.runtime.capture import CaptureThread, EndOfStream, Frame, SourceSpec, parse_source
from edgead.runtime.results import finite_or_none, new_run_id, result_record

logger = logging.getLogger(__name__)


RESULTS_NAME = "results.jsonl"


class ResultSink(Protocol):
    """Where result records go besides results.jsonl (`edgead.runtime.outputs`)."""

    def publish(self, record: dict[str, Any]) -> None:
        """Take one record (must not block the loop for long)."""

    def close(self) -> None:
        """Flush what can be flushed and stop."""


class FrameDetector(Protocol):
    """What the loop needs from `edgead.runtime.Detector` (duck-typed so tests can fake it)."""

    @property
    def backend(self) -> str:
        """Name of the backend in use."""

    @property
    def fallbacks(self) -> list[str]:
        """Load-time fallbacks ("wanted X: reason")."""

    def __call__(self, frame: np.ndarray, channel_order: str = "BGR") -> Any:
        """A Result with raw_score, score, is_anomaly, anomaly_map, timings_ms."""

    def close(self) -> None:
        """Release the backend."""


@dataclass(frozen=True, kw_only=True)
class LoopConfig:
    """Options of the inspection loop.

    Attributes:
        roi: (x, y, w, h) px crop applied to every frame before scoring; None: whole frame.
        out_dir: folder for results.jsonl, anomalies/ and summary.json; None: JSON lines go to
            `LoopConfig.stream` (stdout in the CLI) and no images are saved.
        save_anomalies: save anomalous frames with their heat-map overlay.
        max_saved_images: stop saving images after this many (disk guard; logged once).
        status_every_s: seconds between status log lines; 0 disables them.
        latency_window: latencies kept for the percentiles (a bounded window).
        max_fallbacks: backend replacements allowed mid-run before the loop gives up.
        stall_warn_s: log a warning when no frame arrived for this long (live sources).
        run_id: id written into every result and anomaly image name (None: a new one,
            `edgead.runtime.results.new_run_id`), so restarts into the same folder never
            overwrite an image an older line points to.
        rotate_bytes: results.jsonl is renamed to results.jsonl.1 (.1 -> .2, ...) when it
            reaches this size; None: never rotated.
        rotate_keep: rotated files kept (older ones are deleted).
    """

    roi: tuple[int, int, int, int] | None = None
    out_dir: Path | None = None
    save_anomalies: bool = True
    max_saved_images: int = 10_000
    status_every_s: float = 10.0
    latency_window: int = 2048
    max_fallbacks: int = 1
    stall_warn_s: float = 10.0
    run_id: str | None = None
    rotate_bytes: int | None = 100 * 1024**2
    rotate_keep: int = 10


def parse_roi(text: str | None) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) px from 'x,y,w,h'; ConfigError when malformed."""
    if text is None or not text.strip():
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError as exc:
        raise ConfigError(f"--roi expects x,y,w,h in whole pixels, got {text!r}") from exc
    if len(values) != 4 or values[0] < 0 or values[1] < 0 or values[2] <= 0 or values[3] <= 0:
        raise ConfigError(f"--roi expects x,y,w,h with x, y >= 0 and w, h > 0; got {text!r}")
    x, y, w, h = values
    return x, y, w, h


@dataclass
class FallbackRecord:
    """A backend replaced mid-run."""

    frame_index: int
    from_backend: str
    to_backend: str
    reason: str
    at: str  # ISO 8601 UTC


@dataclass
class RunSummary:
    """What a run did; written to summary.json and returned by `run_inspection`.

    Latencies are milliseconds from capture to the result line being written.
    """

    source: str
    backend: str
    started_at: str
    run_id: str = ""
    ended_at: str = ""
    stop_reason: str = ""
    duration_s: float = 0.0
    read: int = 0
    scored: int = 0
    dropped: int = 0
    corrupt: int = 0
    anomalies: int = 0
    saved_images: int = 0
    reconnects: int = 0
    outages: int = 0
    fps: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    load_fallbacks: list[str] = field(default_factory=list)
    runtime_fallbacks: list[FallbackRecord] = field(default_factory=list)

    @property
    def accounted(self) -> bool:
        """scored + dropped + corrupt == read."""
        return self.scored + self.dropped + self.corrupt == self.read

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (with `accounted`)."""
        data = asdict(self)
        data["accounted"] = self.accounted
        return data


#: seconds between fps updates when status lines are off (--status-every 0)
FPS_UPDATE_S = 5.0


class LoopStats:
    """Live counters and a bounded latency window, shared with the HTTP endpoint (thread-safe)."""

    def __init__(self, window: int) -> None:
        self._lock = threading.Lock()
        self.latencies_ms: deque[float] = deque(maxlen=window)
        self.scored = 0
        self.corrupt = 0
        self.anomalies = 0
        self.last_score: float | None = None
        self.last_scored_at: float | None = None  # perf_counter
        self.started_at = time.perf_counter()
        self.backend = ""
        self.fallbacks = 0
        self._fps_mark = (self.started_at, 0)
        self.fps = 0.0
        #: called with each scored frame's latency, ms (e.g. the /metrics histogram)
        self.latency_observers: list[Callable[[float], None]] = []
        #: output name -> object with .stats.sent, .pending and .spool.dropped (sinks)
        self.outputs: dict[str, Any] = {}

    def record(self, latency_ms: float, score: float, is_anomaly: bool) -> None:
        """Count one scored frame."""
        with self._lock:
            self.latencies_ms.append(latency_ms)
            self.scored += 1
            self.anomalies += int(is_anomaly)
            self.last_score = score
            self.last_scored_at = time.perf_counter()
        for observe in self.latency_observers:
            observe(latency_ms)

    def add_corrupt(self) -> None:
        """Count one frame the detector rejected."""
        with self._lock:
            self.corrupt += 1

    def update_fps(self) -> float:
        """Frames scored per second since the previous call."""
        with self._lock:
            now = time.perf_counter()
            mark_t, mark_n = self._fps_mark
            if now - mark_t > 0:
                self.fps = (self.scored - mark_n) / (now - mark_t)
            self._fps_mark = (now, self.scored)
            return self.fps

    def percentiles(self) -> dict[str, float]:
        """p50/p95/p99 of the latency window, ms (empty when nothing was scored)."""
        with self._lock:
            values = np.fromiter(self.latencies_ms, dtype=np.float64)
        if values.size == 0:
            return {}
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(values.max())}

    def snapshot(self) -> dict[str, Any]:
        """Counters for /metrics and /healthz."""
        with self._lock:
            return {
                "scored": self.scored,
                "corrupt": self.corrupt,
                "anomalies": self.anomalies,
                "last_score": self.last_score,
                "last_scored_at": self.last_scored_at,
                "backend": self.backend,
                "fallbacks": self.fallbacks,
                "fps": self.fps,
                "outputs": {
                    name: {
                        "sent": sink.stats.sent,
                        "pending": sink.pending,
                        "dropped": sink.spool.dropped,
                    }
                    for name, sink in self.outputs.items()
                },
            }


class JsonlWriter:
    """Appends one JSON object per line; every line is written whole and flushed, fsync on close.

    A partial last line (left by a power cut or kill -9) is trimmed when the file is opened.
    """

    def __init__(
        self,
        path: Path | None,
        stream: IO[str] | None = None,
        rotate_bytes: int | None = None,
        rotate_keep: int = 10,
    ) -> None:
        self.path = path
        self._owns = path is not None
        self.rotate_bytes = rotate_bytes
        self.rotate_keep = max(1, int(rotate_keep))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            _trim_partial_line(path)
            self._fh: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        elif stream is not None:
            self._fh = stream
        else:
            raise ConfigError("JsonlWriter needs a path or a stream")

    def write(self, record: dict[str, Any]) -> None:
        """Write `record` as one line and flush it; rotate the file first when it is full."""
        line = json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n"
        if self._owns and self.rotate_bytes is not None and self._fh.tell() > 0:
            if self._fh.tell() + len(line) > self.rotate_bytes:
                self._rotate()
        self._fh.write(line)
        self._fh.flush()

    def _rotate(self) -> None:
        """results.jsonl -> results.jsonl.1, .1 -> .2, ... (at most `rotate_keep` kept)."""
        assert self.path is not None  # noqa: S101 - only called for files
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        oldest = self.path.with_name(f"{self.path.name}.{self.rotate_keep}")
        oldest.unlink(missing_ok=True)
        for i in range(self.rotate_keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                older.rename(self.path.with_name(f"{self.path.name}.{i + 1}"))
        self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        logger.info("rotated %s (%d bytes reached)", self.path, self.rotate_bytes)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def close(self) -> None:
        """Flush, fsync (files) and close."""
        self._fh.flush()
        if self._owns:
            os.fsync(self._fh.fileno())
            self._fh.close()


def _trim_partial_line(path: Path) -> None:
    """Cut `path` back to its last newline if it ends in the middle of a line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 1))
        if fh.read(1) == b"\n":
            return
        block = 65536
        pos = size
        while pos > 0:
            start = max(0, pos - block)
            fh.seek(start)
            chunk = fh.read(pos - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                fh.truncate(start + cut + 1)
                logger.warning(
                    "%s ended in a partial line (%d bytes); trimmed it",
                    path,
                    size - start - cut - 1,
                )
                return
            pos = start
        fh.truncate(0)
        logger.warning("%s held only a partial line; emptied it", path)


def result_fields(result: Any) -> dict[str, Any]:
    """The verdict part of a result record (shared by `run` lines and `edgead serve` replies).

    {"raw_score", "score" (None when NaN/inf), "is_anomaly" (None when uncalibrated),
    "latency_ms": {stage: ms} from `result.timings_ms`, rounded to 3 decimals}.
    """
    return {
        "raw_score": finite_or_none(result.raw_score),
        "score": finite_or_none(result.score),
        "is_anomaly": None if result.is_anomaly is None else bool(result.is_anomaly),
        "latency_ms": {k: round(float(v), 3) for k, v in result.timings_ms.items()},
    }


@contextlib.contextmanager
def stop_on_signals(stop_event: threading.Event) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM set `stop_event` instead of killing the process.

    Only works in the main thread (Python's rule); elsewhere it does nothing and says so.
    """
    if threading.current_thread() is not threading.main_thread():
        logger.debug("not in the main thread: SIGINT/SIGTERM handlers not installed")
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        if not stop_event.is_set():
            logger.info(
                "%s received: finishing the frame in flight, then stopping",
                signal.Signals(signum).name,
            )
        stop_event.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class InspectionLoop:
    """Scores frames from a started CaptureThread until it ends or `stop_event` is set.

    Args:
        detector: a loaded detector (FrameDetector).
        capture: an opened CaptureThread (call `capture.open()` first for a clean start-up error).
        config: LoopConfig.
        stop_event: the same Event the capture thread watches.
        fallback_factory: returns a replacement detector when the current one fails mid-run
            (typically `lambda: Detector.load(path, device="cpu")`); None: a failure ends the run.
        stream: where JSON lines go when `config.out_dir` is None (e.g. sys.stdout).
        stats: LoopStats shared with an HTTP endpoint; a new one when None.
        sinks: where every result record also goes (MQTT, webhook: `edgead.runtime.outputs`),
            after it was written to results.jsonl.
    """

    def __init__(
        self,
        detector: FrameDetector,
        capture: CaptureThread,
        config: LoopConfig,
        stop_event: threading.Event,
        *,
        fallback_factory: Callable[[], FrameDetector] | None = None,
        stream: IO[str] | None = None,
        stats: LoopStats | None = None,
        sinks: Sequence[ResultSink] = (),
    ) -> None:
        self.detector = detector
        self.sinks = list(sinks)
        self.run_id = config.run_id or new_run_id()
        self._seq = 0
        self.capture = capture
        self.config = config
        self.stop_event = stop_event
        self.fallback_factory = fallback_factory
        self.stream = stream
        self.stats = stats or LoopStats(config.latency_window)
        self.stats.backend = detector.backend
        self.summary = RunSummary(
            run_id=self.run_id,
            source=capture.source_name,
            backend=detector.backend,
            started_at=_utc_now(),
            load_fallbacks=list(getattr(detector, "fallbacks", [])),
        )
        self._roi_checked = False
        self._saving_stopped_logged = False

    # -- public ------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        """Run to the end of the source or a stop request; returns (and writes) the summary."""
        out_dir = self.config.out_dir
        writer = JsonlWriter(
            out_dir / RESULTS_NAME if out_dir else None,
            self.stream,
            self.config.rotate_bytes,
            self.config.rotate_keep,
        )
        start = time.perf_counter()
        stop_reason = "error"
        if not self.capture.is_alive():
            self.capture.start()
        next_status = start + self.config.status_every_s
        try:
            stop_reason = self._consume(writer, next_status)
        finally:
            self.stop_event.set()
            self.capture.join(timeout=max(5.0, self.capture.config.timeout_ms / 1000 + 1))
            if self.capture.is_alive():
                logger.error(
                    "capture thread did not stop within its read timeout; counts may "
                    "miss the frame it is reading"
                )
            self.capture.drain()
            writer.close()
            for sink in self.sinks:
                sink.close()
            self._finish(stop_reason, time.perf_counter() - start)
        return self.summary

    # -- internals ---------------------------------------------------------------------------
    def _consume(self, writer: JsonlWriter, next_status: float) -> str:
        last_frame_seen = time.perf_counter()
        stall_warned = False
        while True:
            if self.stop_event.is_set():
                return "signal"
            try:
                item = self.capture.queue.get(timeout=0.2)
            except queue.Empty:
                now = time.perf_counter()
                if now - last_frame_seen > self.config.stall_warn_s and not stall_warned:
                    logger.warning(
                        "no frame from %s for %.0f s",
                        self.capture.source_name,
                        now - last_frame_seen,
                    )
                    stall_warned = True
                next_status = self._maybe_status(next_status)
                continue
            if isinstance(item, EndOfStream):
                if item.error is not None:
                    raise item.error
                if item.reason == "source_lost":
                    logger.error("%s was lost and did not come back", self.capture.source_name)
                # the capture thread ends with "stopped" when a stop request reached it first
                return "signal" if self.stop_event.is_set() else item.reason
            last_frame_seen, stall_warned = time.perf_counter(), False
            self._process(item, writer)
            next_status = self._maybe_status(next_status)

    def _crop(self, frame: Frame) -> np.ndarray | None:
        """The ROI of the frame; None (corrupt) when it does not fit; ConfigError on the first."""
        roi = self.config.roi
        if roi is None or frame.image is None:
            return frame.image
        x, y, w, h = roi
        height, width = frame.image.shape[:2]
        if x + w > width or y + h > height:
            if not self._roi_checked:
                raise ConfigError(
                    f"--roi {x},{y},{w},{h} does not fit the {width}x{height} frames "
                    f"of {self.capture.source_name}; choose x+w <= {width} and "
                    f"y+h <= {height}"
                )
            logger.warning(
                "frame %d (%dx%d) is too small for the ROI; skipped", frame.index, width, height
            )
            return None
        self._roi_checked = True
        return frame.image[y : y + h, x : x + w]

    def _score(self, image: np.ndarray, frame_index: int) -> Any:
        """Score with the current detector, replacing it once per failure when allowed."""
        try:
            return self.detector(image, channel_order="BGR")
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - a backend failure: fall back, recorded
            used = len(self.summary.runtime_fallbacks)
            if self.fallback_factory is None or used >= self.config.max_fallbacks:
                raise BackendUnavailableError(
                    f"backend {self.detector.backend} failed on frame {frame_index} ({exc!r}) and "
                    f"no fallback is left ({used} used of {self.config.max_fallbacks})"
                ) from exc
            old = self.detector.backend
            logger.error("backend %s failed on frame %d: %r; falling back", old, frame_index, exc)
            with contextlib.suppress(Exception):
                self.detector.close()
            self.detector = self.fallback_factory()
            record = FallbackRecord(
                frame_index=frame_index,
                from_backend=old,
                to_backend=self.detector.backend,
                reason=repr(exc),
                at=_utc_now(),
            )
            self.summary.runtime_fallbacks.append(record)
            self.summary.backend = self.detector.backend
            self.stats.backend = self.detector.backend
            self.stats.fallbacks += 1
            logger.warning(
                "now scoring with %s (fallback %d of %d)",
                self.detector.backend,
                used + 1,
                self.config.max_fallbacks,
            )
            return self.detector(image, channel_order="BGR")

    def _record(self, frame: Frame, **fields: Any) -> dict[str, Any]:
        """A result record of `frame` (schema edgead.result/1) with the next sequence number."""
        threshold = getattr(getattr(self.detector, "manifest", None), "threshold", None)
        record = result_record(
            run_id=self.run_id,
            seq=self._seq,
            frame=frame.index,
            source=frame.source_item,
            timestamp=frame.timestamp,
            threshold=threshold,
            **fields,
        )
        self._seq += 1
        return record

    def _emit(self, record: dict[str, Any], writer: JsonlWriter) -> None:
        """Write the record to results.jsonl, then hand it to every sink."""
        writer.write(record)
        for sink in self.sinks:
            sink.publish(record)

    def _reject(self, frame: Frame, reason: str, writer: JsonlWriter) -> None:
        """Count a frame that could not be scored and write its "corrupt" result line."""
        self.stats.add_corrupt()
        record = self._record(frame, error=reason)
        record["latency_ms"]["total"] = round((time.perf_counter() - frame.captured_at) * 1e3, 3)
        self._emit(record, writer)

    def _process(self, frame: Frame, writer: JsonlWriter) -> None:
        dequeued = time.perf_counter()
        if frame.image is None:
            self._reject(frame, frame.problem or "no image", writer)
            return
        image = self._crop(frame)
        if image is None:
            self._reject(frame, "frame too small for the ROI", writer)
            return
        try:
            result = self._score(image, frame.index)
        except DataError as exc:
            logger.warning("frame %d rejected by the detector: %s", frame.index, exc)
            self._reject(frame, f"rejected by the detector: {exc}", writer)
            return
        scored = time.perf_counter()
        is_anomaly = bool(result.is_anomaly)
        record = self._record(
            frame,
            raw_score=result.raw_score,
            score=result.score,
            is_anomaly=None if result.is_anomaly is None else is_anomaly,
        )
        record["latency_ms"] = {
            "queue": round((dequeued - frame.captured_at) * 1e3, 3),
            **{k: round(float(v), 3) for k, v in result.timings_ms.items()},
            "score": round((scored - dequeued) * 1e3, 3),
        }
        if is_anomaly:
            saved = self._save_anomaly(frame, image, result)
            if saved is not None:
                record["image"] = saved
        record["latency_ms"]["total"] = round((time.perf_counter() - frame.captured_at) * 1e3, 3)
        self._emit(record, writer)
        self.stats.record(record["latency_ms"]["total"], float(result.score), is_anomaly)

    def _save_anomaly(self, frame: Frame, image: np.ndarray, result: Any) -> str | None:
        """Write the overlay panel of an anomalous frame; its path relative to out_dir, or None."""
        out_dir = self.config.out_dir
        if out_dir is None or not self.config.save_anomalies or result.anomaly_map is None:
            return None
        if self.summary.saved_images >= self.config.max_saved_images:
            if not self._saving_stopped_logged:
                logger.warning(
                    "saved %d anomaly images (the limit); not saving more",
                    self.config.max_saved_images,
                )
                self._saving_stopped_logged = True
            return None
        norm = getattr(getattr(self.detector, "manifest", None), "normalisation", {}) or {}
        title = (
            f"frame {frame.index}  score {float(result.score):.3f}  "
            f"raw {float(result.raw_score):.4g}"
        )
        try:
            panel = score_panel(to_rgb(image, "BGR"), result.anomaly_map, norm, title)
        except DataError as exc:
            logger.warning("no overlay for frame %d: %s", frame.index, exc)
            return None
        ok, encoded = cv2.imencode(
            ".jpg", cv2.cvtColor(panel, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]
        )
        if not ok:
            logger.warning("could not encode the overlay of frame %d; not saved", frame.index)
            return None
        name = f"anomalies/{self.run_id}_frame_{frame.index:09d}.jpg"
        write_bytes_atomic(out_dir / name, encoded.tobytes())
        self.summary.saved_images += 1
        return name

    def _maybe_status(self, next_status: float) -> float:
        if time.perf_counter() < next_status:
            return next_status
        if self.config.status_every_s <= 0:  # no status lines, but keep edgead_fps live
            self.stats.update_fps()
            return time.perf_counter() + FPS_UPDATE_S
        self.log_status()
        return time.perf_counter() + self.config.status_every_s

    def log_status(self) -> None:
        """One status line: fps, p50/p95 latency, counts, backend."""
        fps = self.stats.update_fps()
        pct = self.stats.percentiles()
        counts = self.capture.counters.snapshot()
        snap = self.stats.snapshot()
        logger.info(
            "status: %.1f fps | latency p50 %.1f ms p95 %.1f ms | read %d scored %d "
            "dropped %d corrupt %d | anomalies %d | reconnects %d | %s",
            fps,
            pct.get("p50", float("nan")),
            pct.get("p95", float("nan")),
            counts["read"],
            snap["scored"],
            counts["dropped"],
            counts["corrupt"] + snap["corrupt"],
            snap["anomalies"],
            counts["reconnects"],
            snap["backend"],
        )

    def _finish(self, stop_reason: str, duration_s: float) -> None:
        counts = self.capture.counters.snapshot()
        snap = self.stats.snapshot()
        s = self.summary
        s.ended_at = _utc_now()
        s.stop_reason = stop_reason
        s.duration_s = round(duration_s, 3)
        s.read, s.dropped = counts["read"], counts["dropped"]
        s.corrupt = counts["corrupt"] + snap["corrupt"]
        s.scored, s.anomalies = snap["scored"], snap["anomalies"]
        s.reconnects, s.outages = counts["reconnects"], counts["outages"]
        s.fps = round(s.scored / duration_s, 3) if duration_s > 0 else 0.0
        s.latency_ms = {k: round(v, 3) for k, v in self.stats.percentiles().items()}
        if not s.accounted and stop_reason != "error":  # an error leaves its frame uncounted
            logger.error(
                "frame accounting is off: scored %d + dropped %d + corrupt %d != read %d",
                s.scored,
                s.dropped,
                s.corrupt,
                s.read,
            )
        if self.config.out_dir is not None:
            write_json_atomic(self.config.out_dir / "summary.json", s.to_dict())
        logger.info(
            "run ended (%s): read %d, scored %d, dropped %d, corrupt %d, anomalies %d, "
            "%.1f fps, backend %s%s",
            stop_reason,
            s.read,
            s.scored,
            s.dropped,
            s.corrupt,
            s.anomalies,
            s.fps,
            s.backend,
            f", {len(s.runtime_fallbacks)} fallback(s)" if s.runtime_fallbacks else "",
        )


def run_inspection(
    model: str | Path,
    source: str,
    *,
    device: str = "auto",
    backend: str | None = None,
    threads: int | None = None,
    config: LoopConfig = LoopConfig(),
    drop: str | None = None,
    loop_source: bool = False,
    max_frames: int | None = None,
    pace_fps: float | None = None,
    open_retries: int = 3,
    backoff_initial_s: float = 0.5,
    backoff_max_s: float = 10.0,
    http_port: int | None = None,
    http_host: str = "127.0.0.1",
    stream: IO[str] | None = None,
    stop_event: threading.Event | None = None,
    threshold: float | None = None,
    sensitivity: float | None = None,
    resume: bool = False,
    sink_factories: Sequence[Callable[[str], ResultSink]] = (),
    trusted_keys: list[Any] | None = None,
) -> RunSummary:
    """Load `model`, open `source` and run the inspection loop until the source ends or a stop.

    Args:
        model: a `.edgead` bundle.
        source: camera index, /dev/videoN, rtsp/http URL, video file or image folder.
        device, backend, threads: passed to `Detector.load`; a mid-run backend failure reloads
            the bundle with device="cpu".
        config: LoopConfig (ROI, output folder, status period, ...).
        drop: "oldest" | "newest" | "none"; None: oldest for live sources, none for files.
        loop_source: replay a file/folder from the start when it ends (soak tests, demos).
        max_frames: stop after this many frames read.
        pace_fps: deliver file/folder frames at this rate, as a camera would (None: as fast
            as they decode).
        open_retries, backoff_initial_s, backoff_max_s: opening/reconnecting (see CaptureConfig).
        http_port: serve /healthz and /metrics on `http_host`:port when given.
        stream: JSON lines destination when `config.out_dir` is None.
        stop_event: set it to stop (the CLI wires SIGINT/SIGTERM to it).
        threshold, sensitivity: decision threshold override (see `Detector.load`).
        resume: folder sources skip the files that already have a result line in
            `config.out_dir` (results.jsonl and its rotated files), so a restarted run gives
            every file exactly one line.
        sink_factories: each called with the run id, returning a ResultSink (MQTT, webhook).
        trusted_keys: Ed25519 public keys the bundle must be signed by (see `Detector.load`);
            the fallback reload checks them too.

    Raises:
        DataError: the source cannot be opened after `open_retries` attempts.
        BundleError / BackendUnavailableError: from loading the bundle.
    """
    from edgead.runtime.capture import CaptureConfig, FolderReader, open_reader
    from edgead.runtime.detector import Detector

    spec = _parse_run_source(source, http_port, resume, config)
    capture_config = CaptureConfig(
        queue_size=2 if spec.is_live else 4,
        drop=drop or ("oldest" if spec.is_live else "none"),
        loop=loop_source,
        max_frames=max_frames,
        open_retries=open_retries,
        pace_fps=pace_fps,
        backoff_initial_s=backoff_initial_s,
        backoff_max_s=backoff_max_s,
    )
    stop_event = stop_event or threading.Event()
    done = recorded_sources(config.out_dir) if resume else set()

    def opener() -> Any:
        if spec.kind == "folder":
            return FolderReader(str(spec.target), skip=done)
        return open_reader(spec, capture_config.timeout_ms)

    capture = CaptureThread(
        opener, capture_config, is_live=spec.is_live, stop_event=stop_event, name=str(spec)
    )
    overrides: dict[str, Any] = {
        "threshold": threshold,
        "sensitivity": sensitivity,
        "modality": "image",
        "trusted_keys": trusted_keys,
    }
    detector = Detector.load(model, device=device, backend=backend, threads=threads, **overrides)
    try:
        capture.open()
    except Exception:
        detector.close()
        raise
    if done:
        logger.info("resuming: %d file(s) of %s already have a result line", len(done), spec)
    logger.info("scoring %s with %s (drop policy %s)", spec, detector.backend, capture_config.drop)

    def fallback() -> FrameDetector:
        return Detector.load(model, device="cpu", threads=threads, **overrides)

    run_id = config.run_id or new_run_id()
    config = dataclasses.replace(config, run_id=run_id)
    sinks = [factory(run_id) for factory in sink_factories]
    loop = InspectionLoop(
        detector,
        capture,
        config,
        stop_event,
        fallback_factory=fallback,
        stream=stream,
        sinks=sinks,
    )
    for i, sink in enumerate(sinks):
        if hasattr(sink, "spool"):
            loop.stats.outputs[f"{getattr(sink, 'name', 'output')}{i}"] = sink
    server = None
    if http_port is not None:
        from edgead.runtime.metrics_http import MetricsServer

        def collect() -> tuple[dict[str, int], dict[str, Any], dict[str, float], dict[str, str]]:
            return (
                capture.counters.snapshot(),
                loop.stats.snapshot(),
                loop.stats.percentiles(),
                {"model": str(model), "backend": loop.stats.backend, "source": str(spec)},
            )

        try:
            server = MetricsServer(
                http_port, collect, host=http_host, stall_after_s=max(30.0, config.stall_warn_s)
            ).start()
        except Exception:
            for sink in sinks:  # nothing was scored: leave the spools for the next run
                sink.close()
            loop.detector.close()
            raise
        loop.stats.latency_observers.append(server.observe_latency)
    try:
        return loop.run()
    finally:
        if server is not None:
            server.close()
        with contextlib.suppress(Exception):
            loop.detector.close()


def _parse_run_source(
    source: str, http_port: int | None, resume: bool, config: LoopConfig
) -> SourceSpec:
    """The parsed `source`, after checking the --http port and --resume's needs.

    Raises:
        ConfigError: a port outside 0..65535, or --resume without a folder source and --out.
    """
    if http_port is not None and not 0 <= int(http_port) <= 65535:
        raise ConfigError(f"--http port must be in 0..65535 (0: any free port); got {http_port}")
    spec = parse_source(source)
    if resume and spec.kind != "folder":
        raise ConfigError(f"--resume needs a folder source; {spec} is not one")
    if resume and config.out_dir is None:
        raise ConfigError("--resume needs --out (it reads the results already written there)")
    return spec


def recorded_sources(out_dir: Path | None) -> set[str]:
    """File names with a result line in `out_dir`'s results.jsonl and its rotated files."""
    if out_dir is None:
        return set()
    names: set[str] = set()
    for path in sorted(Path(out_dir).glob(RESULTS_NAME + "*")):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    source = json.loads(line).get("source")
                except (ValueError, AttributeError):
                    continue  # a partial last line: that file is scored again
                if source:
                    names.add(str(source))
    return names
