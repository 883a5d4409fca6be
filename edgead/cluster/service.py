"""`edgead serve`: score images or rows sent over HTTP. The API, and its one-process server. No Ray.

    POST /score   body: an encoded image (PNG/JPEG/..., any Content-Type but application/json)
                  -> {"ts", "item", "raw_score", "score", "is_anomaly", "latency_ms": {...}}
                  (the fields of an `edgead run` result line, `edgead.runtime.loop.result_fields`)
                  body: JSON {"rows": [[...], ...] or [{feature: value}, ...]} (tabular bundles)
                  -> {"ts", "results": [{"item", "raw_score", "score", "is_anomaly"}], ...}
                  `?item=NAME` is echoed back as "item".
    GET /healthz  200 {"status": "ok", "model", "backend", "requests", ...} once the model is
                  loaded (a service waits for requests, so an idle one is healthy)
    GET /metrics  Prometheus text (`edgead.runtime.metrics_http.render_metrics`): requests as
                  frames read, scored items, rejected items as corrupt, latency quantiles (ms)

A bad request (undecodable image, wrong modality, malformed JSON) gets 400 with {"error": ...};
a body over `max_body_bytes` gets 413. `ScoringService.handle` is the whole API: the stdlib server
below and the Ray Serve deployment (`edgead.cluster.ray_serve`) both call it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import numpy as np

from edgead.errors import ConfigError, DataError, EdgeadError
from edgead.runtime.results import finite_or_none

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024
_JSON = "application/json"


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status code, content type and body bytes."""

    status: int
    content_type: str
    body: bytes

    @classmethod
    def json(cls, status: int, payload: Any) -> Reply:
        """A JSON reply (NaN is not valid JSON: callers pass None instead)."""
        return cls(status, _JSON, json.dumps(payload, allow_nan=False).encode())


class ServiceStats(Protocol):
    """Counters behind /metrics and /healthz; `LocalStats` here, a Ray actor proxy on Ray."""

    def record(self, latency_ms: float, score: float, is_anomaly: bool, items: int = 1) -> None:
        """Count `items` scored items of one request."""

    def add_request(self, rejected: bool) -> None:
        """Count one request (rejected: answered 4xx)."""

    def collect(self) -> dict[str, Any]:
        """{"requests", "rejected", "snapshot", "quantiles", "seconds_since_last"}."""


class LocalStats:
    """ServiceStats in this process: the inspection loop's `LoopStats` plus request counters."""

    def __init__(self, window: int = 2048) -> None:
        from edgead.runtime.loop import LoopStats

        self._stats = LoopStats(window)
        self._lock = threading.Lock()
        self.requests = 0
        self.rejected = 0

    def record(self, latency_ms: float, score: float, is_anomaly: bool, items: int = 1) -> None:
        """Count `items` scored items of one request."""
        for _ in range(items):
            self._stats.record(latency_ms, score, is_anomaly)

    def add_request(self, rejected: bool) -> None:
        """Count one request; a rejected one also counts as a corrupt item."""
        with self._lock:
            self.requests += 1
            self.rejected += int(rejected)
        if rejected:
            self._stats.add_corrupt()

    def collect(self) -> dict[str, Any]:
        """Counters and latency quantiles, with the age of the last scored item (s)."""
        self._stats.update_fps()
        snap = self._stats.snapshot()
        last = snap.pop("last_scored_at")
        with self._lock:
            requests, rejected = self.requests, self.rejected
        return {
            "requests": requests,
            "rejected": rejected,
            "snapshot": snap,
            "quantiles": self._stats.percentiles(),
            "seconds_since_last": None if last is None else time.perf_counter() - last,
        }


class ScoringService:
    """One loaded `Detector` behind the HTTP API of this module (thread-safe: one score at a time).

    Args:
        bundle: `.edgead` bundle.
        device, backend, threads, trusted_keys: passed to `Detector.load`.
        stats: ServiceStats; a new LocalStats when None.
        max_body_bytes: larger request bodies are refused (413) before they are decoded.
    """

    def __init__(
        self,
        bundle: str | Path,
        *,
        device: str = "auto",
        backend: str | None = None,
        threads: int | None = None,
        stats: ServiceStats | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        trusted_keys: list[str] | None = None,
    ) -> None:
        from edgead.runtime import Detector

        self.bundle = str(bundle)
        self.detector = Detector.load(
            bundle, device=device, backend=backend, threads=threads, trusted_keys=trusted_keys
        )
        self.stats: ServiceStats = stats or LocalStats()
        self.max_body_bytes = max_body_bytes
        self._lock = threading.Lock()

    # -- the API ---------------------------------------------------------------------------
    def handle(self, method: str, target: str, body: bytes, content_type: str) -> Reply:
        """Answer one request. `target` is the path with its query string."""
        url = urlsplit(target)
        path = url.path.rstrip("/") or "/"
        if method == "GET" and path == "/healthz":
            return self.health()
        if method == "GET" and path == "/metrics":
            return self.metrics()
        if path != "/score":
            return Reply.json(
                404, {"error": f"{method} {path}: not found; POST /score, GET /healthz or /metrics"}
            )
        if method != "POST":
            return Reply.json(405, {"error": "/score takes POST with an image or JSON rows"})
        if len(body) > self.max_body_bytes:
            self.stats.add_request(rejected=True)
            return Reply.json(
                413,
                {"error": f"body of {len(body)} bytes exceeds the limit of {self.max_body_bytes}"},
            )
        item = parse_qs(url.query).get("item", [None])[0]
        try:
            if content_type.split(";")[0].strip().lower() == _JSON:
                payload = self.score_rows(body, item)
            else:
                payload = self.score_image(body, item)
        except EdgeadError as exc:
            self.stats.add_request(rejected=True)
            return Reply.json(400, {"error": str(exc)})
        self.stats.add_request(rejected=False)
        return Reply.json(200, payload)

    def score_image(self, data: bytes, item: str | None = None) -> dict[str, Any]:
        """The result of one encoded image (PNG, JPEG, ... as OpenCV decodes them)."""
        from edgead.ops.decode import decode_frame
        from edgead.runtime.loop import result_fields

        if self.detector.manifest.modality != "image":
            raise DataError('this bundle scores tabular rows; POST JSON {"rows": [...]}')
        received = time.perf_counter()
        try:  # the one decoder of training, predict and run (gray, 16-bit, alpha rules)
            frame = decode_frame(data, item or "in the request body")
        except DataError as exc:
            raise DataError(f"{exc}; POST the encoded image file (PNG, JPEG, TIFF, ...)") from exc
        decoded = time.perf_counter()
        with self._lock:
            result = self.detector(frame, channel_order="BGR")
        fields = result_fields(result)
        total_ms = (time.perf_counter() - received) * 1e3
        fields["latency_ms"] = {
            "decode": round((decoded - received) * 1e3, 3),
            **fields["latency_ms"],
            "total": round(total_ms, 3),
        }
        self.stats.record(total_ms, float(result.score), bool(result.is_anomaly))
        return {"ts": _utc_now(), "item": item, **fields}

    def score_rows(self, data: bytes, item: str | None = None) -> dict[str, Any]:
        """Results for JSON rows: {"rows": [[...], ...]} or [{feature: value}, ...]."""
        if self.detector.manifest.modality != "tabular":
            raise DataError("this bundle scores images; POST the encoded image file")
        received = time.perf_counter()
        rows = _rows_from_json(data, self.detector.manifest.input.feature_names)
        with self._lock:
            scores = self.detector.score_rows(rows)
        total_ms = (time.perf_counter() - received) * 1e3
        prefix = item or "row"
        results = [
            {
                "item": f"{prefix}:{i}",
                "raw_score": finite_or_none(r),
                "score": finite_or_none(s),
                "is_anomaly": bool(a),
            }
            for i, (r, s, a) in enumerate(
                zip(scores.raw_scores, scores.scores, scores.is_anomaly, strict=True)
            )
        ]
        for res in results:
            self.stats.record(total_ms, float(res["score"] or 0.0), res["is_anomaly"])
        return {"ts": _utc_now(), "results": results, "latency_ms": {"total": round(total_ms, 3)}}

    def health(self) -> Reply:
        """200 with the model, backend and counters while the detector is loaded."""
        info = self.collect()
        snap = info["snapshot"]
        age = info["seconds_since_last"]
        return Reply.json(
            200,
            {
                "status": "ok",
                "model": self.bundle,
                "backend": self.detector.backend,
                "requests": info["requests"],
                "scored": snap["scored"],
                "rejected": info["rejected"],
                "seconds_since_last_item": None if age is None else round(age, 3),
            },
        )

    def metrics(self) -> Reply:
        """Prometheus text, in the format of `edgead run --http` (prometheus_client)."""
        from edgead.runtime.metrics_http import build_registry, render_metrics

        info = self.collect()
        counts = {"read": info["requests"], "dropped": 0, "corrupt": 0, "reconnects": 0}
        labels = {"model": self.bundle, "backend": self.detector.backend, "source": "http"}
        registry, _ = build_registry(lambda: (counts, info["snapshot"], info["quantiles"], labels))
        return Reply(200, "text/plain; version=0.0.4; charset=utf-8", render_metrics(registry))

    def collect(self) -> dict[str, Any]:
        """The stats' counters with this replica's backend filled in."""
        info = self.stats.collect()
        info["snapshot"]["backend"] = self.detector.backend
        return info

    def close(self) -> None:
        """Release the detector."""
        self.detector.close()


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _rows_from_json(data: bytes, feature_names: list[str] | None) -> np.ndarray:
    """float64 (N, D) from {"rows": [...]} or a bare list; dict rows are ordered by feature name."""
    try:
        payload = json.loads(data)
    except ValueError as exc:
        raise DataError(f"the body is not JSON: {exc}") from exc
    rows = payload.get("rows") if isinstance(payload, dict) else payload
    if not isinstance(rows, list) or not rows:
        raise DataError('expected JSON {"rows": [[...], ...]} with at least one row')
    if isinstance(rows[0], dict):
        if feature_names is None:
            raise DataError("this bundle has no feature names; send rows as JSON lists")
        missing = sorted({n for r in rows for n in feature_names if n not in r})
        if missing:
            raise DataError(f"rows lack features {missing}")
        rows = [[r[n] for n in feature_names] for r in rows]
    try:
        return np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"rows must be lists of numbers of equal length ({exc})") from exc


class HttpServer:
    """`ScoringService` behind the standard library's threaded HTTP server (one process).

    Args:
        service: the ScoringService to call.
        port: TCP port (0 picks a free one; see `.port`).
        host: bind address; 127.0.0.1 unless the service is meant to be reachable.
    """

    def __init__(self, service: ScoringService, port: int, host: str = "127.0.0.1") -> None:
        self.service = service
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._answer(b"")

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                if length > outer.service.max_body_bytes:
                    self._send(Reply.json(413, {"error": f"body of {length} bytes is too large"}))
                    self.close_connection = True
                    return
                self._answer(self.rfile.read(length))

            def _answer(self, body: bytes) -> None:
                ctype = self.headers.get("Content-Type") or "application/octet-stream"
                self._send(outer.service.handle(self.command, self.path, body, ctype))

            def _send(self, reply: Reply) -> None:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, fmt: str, *args: Any) -> None:
                logger.debug("http: " + fmt, *args)

        try:
            self.httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise ConfigError(
                f"--port {port}: cannot listen on {host}:{port} ({exc}); pick a free port"
            ) from exc
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="edgead-serve")

    def start(self) -> HttpServer:
        """Serve in a background thread; returns self."""
        self._thread.start()
        logger.info(
            "serving %s on http://%s:%d", self.service.bundle, *self.httpd.server_address[:2]
        )
        return self

    def close(self) -> None:
        """Stop serving, free the port and release the detector."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)
        self.service.close()
