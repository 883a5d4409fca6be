"""Optional `/healthz` and Prometheus `/metrics` for `edgead run --http PORT` (stdlib only).

Binds to 127.0.0.1 unless told otherwise: a station exposes it on purpose or not at all.

    /healthz  200 {"status": "ok", ...} while frames are being scored;
              503 {"status": "stalled"} when no frame was scored for `stall_after_s`
              (or none yet after that long since start)
    /metrics  Prometheus text format 0.0.4: frame counters, anomalies, reconnects, fallbacks,
              latency quantiles (ms) over the loop's window, fps, last score, an info series.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger(__name__)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def render_metrics(
    counts: dict[str, int], snap: dict[str, Any], quantiles: dict[str, float], info: dict[str, str]
) -> str:
    """Prometheus exposition text from capture counts, loop stats and latency quantiles (ms)."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, value: float | None, labels: str = "") -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        if value is not None:
            lines.append(f"{name}{labels} {value}")

    metric("edgead_frames_read_total", "counter", "Frames read from the source.", counts["read"])
    metric("edgead_frames_scored_total", "counter", "Frames scored.", snap["scored"])
    metric(
        "edgead_frames_dropped_total",
        "counter",
        "Frames dropped by the queue policy.",
        counts["dropped"],
    )
    metric(
        "edgead_frames_corrupt_total",
        "counter",
        "Frames skipped as corrupt.",
        counts["corrupt"] + snap["corrupt"],
    )
    metric("edgead_anomalies_total", "counter", "Frames judged anomalous.", snap["anomalies"])
    metric(
        "edgead_source_reconnects_total",
        "counter",
        "Successful source reconnects.",
        counts["reconnects"],
    )
    metric(
        "edgead_backend_fallbacks_total", "counter", "Backends replaced mid-run.", snap["fallbacks"]
    )
    metric("edgead_fps", "gauge", "Frames scored per second (last status interval).", snap["fps"])
    metric(
        "edgead_last_score",
        "gauge",
        "Normalised score of the last frame (0.5 = threshold).",
        _finite_or_none(snap["last_score"]),
    )
    lines.append("# HELP edgead_latency_ms Capture-to-result latency over the recent window, ms.")
    lines.append("# TYPE edgead_latency_ms summary")
    for key, q in (("p50", "0.5"), ("p95", "0.95"), ("p99", "0.99")):
        if key in quantiles:
            lines.append(f'edgead_latency_ms{{quantile="{q}"}} {quantiles[key]:.3f}')
    labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(info.items()))
    metric("edgead_info", "gauge", "Model and backend in use.", 1, "{" + labels + "}")
    return "\n".join(lines) + "\n"


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
        collect: Callable[
            [], tuple[dict[str, int], dict[str, Any], dict[str, float], dict[str, str]]
        ],
        host: str = "127.0.0.1",
        stall_after_s: float = 30.0,
        timeout_s: float = 10.0,
        max_connections: int = 16,
    ) -> None:
        from edgead.errors import ConfigError

        if not 0 <= int(port) <= 65535:
            raise ConfigError(f"--http port must be in 0..65535 (0: any free port); got {port}")
        self.collect = collect
        self.stall_after_s = stall_after_s
        self.started = time.perf_counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = timeout_s  # socket timeout: idle or slow clients are dropped

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body = render_metrics(*server.collect()).encode()
                    self._send(200, body, "text/plain; version=0.0.4; charset=utf-8")
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
