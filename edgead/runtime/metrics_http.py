"""Optional `/healthz` and Prometheus `/metrics` for `edgead run --http PORT`.

Binds to 127.0.0.1 unless told otherwise: a station exposes it on purpose or not at all.

    /healthz  200 {"status": "ok", ...} while frames are being scored;
              503 {"status": "stalled"} when no frame was scored for `stall_after_s`
              (or none yet after that long since start)
    /metrics  Prometheus text format through prometheus_client (its own registry, no global
              state): frame counters, anomalies, reconnects, fallbacks, output deliveries,
              a histogram of capture-to-result latency (seconds, with _bucket/_sum/_count),
              the latency percentiles of the recent window (ms), fps, last score, an info
              series and the process metrics (CPU seconds, resident memory, open files).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edgead.errors import ConfigError

logger = logging.getLogger(__name__)

#: capture-to-result latency buckets, seconds (1 ms .. 10 s)
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Collect = Callable[[], tuple[dict[str, int], dict[str, Any], dict[str, float], dict[str, str]]]


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise ConfigError(
            "--http needs prometheus_client: pip install 'edgead[station]' (or prometheus-client)"
        ) from exc
    return prometheus_client


class _LoopCollector:
    """A prometheus_client collector reading the loop's counters at scrape time."""

    def __init__(self, collect: Collect) -> None:
        self._collect = collect

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            InfoMetricFamily,
        )

        counts, snap, quantiles, info = self._collect()
        counters = (
            ("edgead_frames_read", "Frames read from the source.", counts["read"]),
            ("edgead_frames_scored", "Frames scored.", snap["scored"]),
            ("edgead_frames_dropped", "Frames dropped by the queue policy.", counts["dropped"]),
            (
                "edgead_frames_corrupt",
                "Frames that could not be scored.",
                counts["corrupt"] + snap["corrupt"],
            ),
            ("edgead_anomalies", "Frames judged anomalous.", snap["anomalies"]),
            ("edgead_source_reconnects", "Successful source reconnects.", counts["reconnects"]),
            ("edgead_backend_fallbacks", "Backends replaced mid-run.", snap["fallbacks"]),
        )
        for name, help_text, value in counters:
            yield CounterMetricFamily(name, help_text, value=value)
        outputs = snap.get("outputs") or {}
        if outputs:
            sent = CounterMetricFamily(
                "edgead_output_sent", "Results delivered per output.", labels=["output"]
            )
            pending = GaugeMetricFamily(
                "edgead_output_pending", "Results buffered on disk per output.", labels=["output"]
            )
            dropped = CounterMetricFamily(
                "edgead_output_dropped", "Results dropped (buffer full).", labels=["output"]
            )
            for name, stats in sorted(outputs.items()):
                sent.add_metric([name], stats["sent"])
                pending.add_metric([name], stats["pending"])
                dropped.add_metric([name], stats["dropped"])
            yield from (sent, pending, dropped)
        yield GaugeMetricFamily("edgead_fps", "Frames scored per second.", value=snap["fps"])
        last = _finite_or_none(snap["last_score"])
        if last is not None:
            yield GaugeMetricFamily(
                "edgead_last_score", "Normalised score of the last frame (0.5 = threshold).", last
            )
        window = GaugeMetricFamily(
            "edgead_latency_recent_ms",
            "Capture-to-result latency percentiles over the recent window, ms.",
            labels=["quantile"],
        )
        for key, q in (("p50", "0.5"), ("p95", "0.95"), ("p99", "0.99")):
            if key in quantiles:
                window.add_metric([q], quantiles[key])
        yield window
        yield InfoMetricFamily("edgead", "Model and backend in use.", value=dict(info))


def build_registry(collect: Collect) -> tuple[Any, Any]:
    """(registry, latency histogram): loop counters, process metrics and the histogram."""
    prom = _prometheus()
    registry = prom.CollectorRegistry(auto_describe=False)
    registry.register(_LoopCollector(collect))
    prom.ProcessCollector(registry=registry)
    histogram = prom.Histogram(
        "edgead_latency_seconds",
        "Capture-to-result latency of scored frames, seconds.",
        buckets=LATENCY_BUCKETS_S,
        registry=registry,
    )
    return registry, histogram


def render_metrics(registry: Any) -> bytes:
    """Prometheus text exposition of `registry`."""
    return _prometheus().generate_latest(registry)


class _BoundedHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with at most `max_connections` connections served at once; the
    rest are closed at once (one thread per connection otherwise grows without bound)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: Any, max_connections: int) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        self.refused = 0
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            logger.debug("http: connection from %s refused (too many open)", client_address)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class MetricsServer:
    """A small threaded HTTP server; `start()` serves in a daemon thread, `close()` stops it.

    Args:
        port: TCP port 0..65535 (0 picks a free one; see `.port`).
        collect: returns (capture counts, loop snapshot, latency quantiles, info labels).
        host: bind address, 127.0.0.1 by default.
        stall_after_s: /healthz reports 503 when no frame was scored for this long.
        timeout_s: a connection idle for this long (no complete request) is closed.
        max_connections: connections served at once; more are closed immediately.
    """

    def __init__(
        self,
        port: int,
        collect: Collect,
        host: str = "127.0.0.1",
        stall_after_s: float = 30.0,
        timeout_s: float = 10.0,
        max_connections: int = 16,
    ) -> None:
        from edgead.errors import ConfigError

        if not 0 <= int(port) <= 65535:
            raise ConfigError(f"--http port must be in 0..65535 (0: any free port); got {port}")
        self.collect = collect
        self.registry, self._latency = build_registry(collect)
        self.stall_after_s = stall_after_s
        self.started = time.perf_counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = timeout_s  # socket timeout: idle or slow clients are dropped

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body = render_metrics(server.registry)
                    self._send(200, body, _prometheus().CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    code, payload = server.health()
                    self._send(code, json.dumps(payload).encode(), "application/json")
                else:
                    self._send(
                        404, b'{"error": "not found; try /healthz or /metrics"}', "application/json"
                    )

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: Any) -> None:
                logger.debug("http: " + fmt, *args)

        try:
            self.httpd = _BoundedHTTPServer((host, port), Handler, max_connections)
        except (OSError, OverflowError) as exc:
            raise ConfigError(
                f"--http {port}: cannot listen on {host}:{port} ({exc}); pick a free port"
            ) from exc
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="edgead-http", daemon=True
        )

    def observe_latency(self, latency_ms: float) -> None:
        """Add one scored frame's capture-to-result latency (ms) to the histogram."""
        self._latency.observe(latency_ms / 1e3)

    def health(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, payload) for /healthz."""
        counts, snap, _, info = self.collect()
        now = time.perf_counter()
        last = snap.get("last_scored_at")
        age = now - (last if last is not None else self.started)
        payload = {
            "status": "ok" if age <= self.stall_after_s else "stalled",
            "seconds_since_last_frame": round(age, 3) if last is not None else None,
            "scored": snap["scored"],
            "read": counts["read"],
            **info,
        }
        return (200 if payload["status"] == "ok" else 503), payload

    def start(self) -> MetricsServer:
        """Serve in the background; returns self."""
        self._thread.start()
        logger.info("serving /healthz and /metrics on http://%s:%d", *self.httpd.server_address[:2])
        return self

    def close(self) -> None:
        """Stop serving and free the port."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)
