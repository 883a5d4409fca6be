"""Sensor rows from an MQTT topic (paho-mqtt, QoS 1), for `edgead run BUNDLE --source mqtt://...`.

    rows = mqtt_rows("mqtt://127.0.0.1:1883/plant/pump3", feature_names, stop_event=stop)
    summary = run_rows(detector, rows, emit)          # edgead.runtime.rows_source

Each message is one row: a JSON list of D numbers or a JSON object keyed by the feature names
(plus an optional time stamp), parsed by `rows_source.parse_json_row` exactly as JSON lines on
stdin are. A message that cannot be used (not JSON, missing features, over `max_bytes`) becomes
a row with a problem, which `run_rows` counts as corrupt and logs with the reason; the loop goes
on. Rows are scored in arrival order (MQTT keeps the order of one publisher's QoS 1 messages).
paho's network thread only queues the payloads; when `max_pending` rows wait unscored, a new
message is turned into a corrupt row ("queue full"), so memory stays bounded and the loss is
counted. Torch-free; paho-mqtt comes with the `station` extra.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from edgead.errors import DataError
from edgead.runtime.outputs import mqtt_client, parse_mqtt_url
from edgead.runtime.rows_source import SensorRow, parse_json_row

logger = logging.getLogger(__name__)

#: largest message accepted as a row, bytes (a row of a few hundred sensors is far below).
DEFAULT_MAX_BYTES = 1 << 16


def is_mqtt_source(source: str) -> bool:
    """True when `source` is an mqtt:// or mqtts:// URL."""
    return source.startswith(("mqtt://", "mqtts://"))


def mqtt_rows(
    url: str,
    feature_names: Sequence[str] | None,
    *,
    stop_event: threading.Event | None = None,
    client_id: str = "",
    connect_timeout_s: float = 10.0,
    max_pending: int = 100_000,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Iterator[SensorRow]:
    """Rows of the URL's topic, in arrival order, until `stop_event` is set.

    Args:
        url: mqtt://[user[:password]@]host[:port]/topic (mqtts:// for TLS); no wildcards.
        feature_names: the bundle's feature names (JSON objects are read by name).
        stop_event: checked every 0.2 s while no message arrives.
        client_id: MQTT client id ("" = the broker picks one, clean session).

    Raises:
        ConfigError: bad URL or paho-mqtt missing.
        DataError: the broker could not be reached or refused the subscription within
            `connect_timeout_s` (raised on the first `next()`).
    """
    target = parse_mqtt_url(url, option="--source")
    _, client = mqtt_client(target, client_id, "an MQTT row source")
    payloads: queue.Queue[bytes] = queue.Queue(maxsize=max_pending)
    dropped: list[int] = []  # one entry per message dropped on a full queue (GIL-atomic append)
    subscribed = threading.Event()

    def on_connect(c: Any, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        logger.info("mqtt source: connected to %s:%d (%s)", target.host, target.port, reason)
        c.subscribe(target.topic, qos=1)

    def on_subscribe(_c: Any, _u: Any, _mid: Any, reasons: Any, _props: Any) -> None:
        if all(not r.is_failure for r in reasons):
            logger.info("mqtt source: subscribed to %r; waiting for rows", target.topic)
            subscribed.set()
        else:
            logger.error("mqtt source: the broker refused the subscription to %r", target.topic)

    def on_message(_c: Any, _u: Any, message: Any) -> None:
        try:
            payloads.put_nowait(bytes(message.payload))
        except queue.Full:
            dropped.append(1)  # counted by the consumer as corrupt rows

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect_async(target.host, target.port, keepalive=30)
    client.loop_start()
    source = _Source(client, payloads, dropped, subscribed, url, max_bytes)
    return source.rows(feature_names, stop_event, connect_timeout_s)


class _Source:
    """The subscribed client and what its callbacks fill; `rows` is the generator."""

    def __init__(
        self,
        client: Any,
        payloads: queue.Queue[bytes],
        dropped: list[int],
        subscribed: threading.Event,
        url: str,
        max_bytes: int,
    ) -> None:
        self.client, self.payloads, self.dropped = client, payloads, dropped
        self.subscribed, self.url, self.max_bytes = subscribed, url, max_bytes

    def rows(
        self,
        feature_names: Sequence[str] | None,
        stop_event: threading.Event | None,
        connect_timeout_s: float,
    ) -> Iterator[SensorRow]:
        """Rows in arrival order; disconnects the client when it ends or is closed."""
        try:
            if not self.subscribed.wait(connect_timeout_s):
                raise DataError(
                    f"MQTT source {self.url}: no subscription within {connect_timeout_s:g} s; "
                    "is the broker running and reachable (host, port, credentials)?"
                )
            index, reported = 0, 0
            while stop_event is None or not stop_event.is_set():
                if len(self.dropped) > reported:
                    reported += 1
                    yield SensorRow(index, None, None, "a message was dropped: row queue full")
                    index += 1
                    continue
                try:
                    payload = self.payloads.get(timeout=0.2)
                except queue.Empty:
                    continue
                where = f"message {index + 1}"
                if len(payload) > self.max_bytes:
                    problem = f"{where}: {len(payload)} bytes, more than {self.max_bytes} allowed"
                    yield SensorRow(index, None, None, problem)
                else:
                    yield parse_json_row(payload, feature_names, index, where)
                index += 1
        finally:
            self.client.disconnect()
            self.client.loop_stop()
