"""Outputs to the line: the disk spool, webhooks (local HTTP server) and MQTT (real Mosquitto)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from edgead.errors import ConfigError
from edgead.runtime.outputs import (
    Spool,
    SpoolSink,
    mqtt_sink,
    outbox_dir,
    parse_mqtt_url,
    webhook_sink,
)
from tests._broker import Mosquitto, Subscriber, first_occurrences


def _records(n: int, run_id: str = "r1", start: int = 0) -> list[dict[str, Any]]:
    return [{"run_id": run_id, "seq": i, "is_anomaly": i % 3 == 0} for i in range(start, n)]


def test_spool_is_fifo_bounded_and_survives_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "box", max_pending=3)
    for i in range(5):
        spool.put(str(i).encode())
    assert len(spool) == 3 and spool.dropped == 2  # the two oldest made room
    name, payload = spool.peek(0.1)  # type: ignore[misc]
    assert payload == b"2"
    spool.ack(name)
    again = Spool(tmp_path / "box", max_pending=3)  # a restarted run picks the rest up in order
    got = []
    while (item := again.peek(0.01)) is not None:
        got.append(item[1])
        again.ack(item[0])
    assert got == [b"3", b"4"]
    again.put(b"5")
    assert again.peek(0.01)[0] > name  # type: ignore[index]  # numbering continues
    with pytest.raises(ConfigError):
        Spool(tmp_path / "x", max_pending=0)


def test_sink_retries_in_order_until_delivered(tmp_path: Path) -> None:
    delivered: list[int] = []
    state = {"up": False}

    def send(payload: bytes) -> bool:
        if not state["up"]:
            return False
        delivered.append(json.loads(payload)["seq"])
        return True

    sink = SpoolSink("fake", Spool(tmp_path / "box"), send, retry_max_s=0.05)
    for record in _records(20):
        sink.publish(record)
    time.sleep(0.3)
    assert delivered == [] and sink.pending == 20 and sink.stats.failures >= 1
    state["up"] = True
    sink.close()
    assert delivered == list(range(20)) and sink.pending == 0
    assert list((tmp_path / "box").iterdir()) == []


def test_outbox_needs_a_folder(tmp_path: Path) -> None:
    assert outbox_dir(tmp_path, None, "mqtt") == tmp_path / "outbox" / "mqtt"
    assert outbox_dir(None, tmp_path / "o", "webhook") == tmp_path / "o" / "webhook"
    with pytest.raises(ConfigError, match="--out or --outbox"):
        outbox_dir(None, None, "mqtt")


def test_parse_mqtt_url() -> None:
    target = parse_mqtt_url("mqtt://user:pw@10.0.0.5:1884/line1/cell%202")
    assert (target.host, target.port, target.topic) == ("10.0.0.5", 1884, "line1/cell 2")
    assert (target.username, target.password, target.tls) == ("user", "pw", False)
    assert parse_mqtt_url("mqtts://broker/t").port == 8883
    for bad in ("http://h/t", "mqtt://h", "mqtt://h/a/#", "mqtt:///t"):
        with pytest.raises(ConfigError, match="mqtt"):
            parse_mqtt_url(bad)


class _Receiver:
    """A local HTTP endpoint that answers 503 to the first `fail_first` POSTs, then 200."""

    def __init__(self, fail_first: int) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.calls = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.calls += 1
                ok = outer.calls > fail_first
                if ok:
                    outer.bodies.append(json.loads(body))
                self.send_response(200 if ok else 503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhook_retries_failed_posts_and_keeps_order(tmp_path: Path) -> None:
    receiver = _Receiver(fail_first=3)
    try:
        sink = webhook_sink(receiver.url, tmp_path / "box", flush_timeout_s=20)
        sink.retry_max_s = 0.05
        for record in _records(10):
            sink.publish(record)
        sink.close()
        assert [b["seq"] for b in receiver.bodies] == list(range(10))
        assert receiver.calls == 13 and sink.pending == 0
    finally:
        receiver.close()
    with pytest.raises(ConfigError, match="http"):
        webhook_sink("ftp://x/y", tmp_path / "b2")


def test_mqtt_broker_stopped_and_restarted_every_record_arrives_in_order(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    subscriber = None
    sink = None
    try:
        subscriber = Subscriber(broker.port, "line/results")
        sink = mqtt_sink(f"{broker.url_base}/line/results", tmp_path / "box", "edgead-test-pub")
        for record in _records(10):
            sink.publish(record)
        assert len(subscriber.wait_for(10, timeout_s=15)) >= 10
        broker.stop()  # the broker goes down mid-run: records wait on disk
        for record in _records(25, start=10):
            sink.publish(record)
        time.sleep(0.5)
        assert sink.pending > 0 and len(list((tmp_path / "box").iterdir())) == sink.pending
        broker.start()  # same port, same store: the subscriber's session comes back
        got = subscriber.wait_for(25, timeout_s=40)
        order = first_occurrences(got)
        assert order == [("r1", i) for i in range(25)], order
        sink.close()
        assert sink.pending == 0
    finally:
        if sink is not None:
            sink.close()
        if subscriber is not None:
            subscriber.close()
        broker.stop()
