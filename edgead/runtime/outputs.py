"""Result outputs to the line: MQTT (paho-mqtt, QoS 1) and HTTP webhooks, through a disk spool.

    loop -> sink.publish(record) -> Spool (one file per record, on disk, bounded)
                                  -> sender thread -> MQTT broker / webhook URL

Every record is written to the spool first, and the sender thread delivers the oldest one and
deletes it only when delivery was confirmed (MQTT: PUBACK of a QoS 1 publish; webhook: HTTP 2xx).
So records are delivered in order and at least once (a retry after a lost acknowledgement
can repeat one), they survive a broker outage and a restart of `edgead run` (the spool is on
disk: `OUT/outbox/mqtt`, `OUT/outbox/webhook`), and the loop never waits for the network. When the
spool holds `max_pending` records the oldest is deleted (logged, counted as dropped): the
buffer is bounded.

The payload is the result record as JSON (schema "edgead.result/1", `edgead.runtime.results`),
the same object as a results.jsonl line.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from edgead._io import write_bytes_atomic
from edgead.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_MAX_PENDING = 100_000
_SUFFIX = ".json"


class Spool:
    """A FIFO of byte payloads kept as numbered files in `folder` (survives restarts).

    Args:
        folder: created if missing; files left by an earlier run are picked up in order.
        max_pending: bound on stored records; the oldest is deleted to make room.
    """

    def __init__(self, folder: Path, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        if max_pending < 1:
            raise ConfigError(f"the output buffer must hold >= 1 record, got {max_pending}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_pending = int(max_pending)
        self._cond = threading.Condition()
        names = sorted(p.name for p in self.folder.iterdir() if p.name.endswith(_SUFFIX))
        self._names: deque[str] = deque(names)
        self._next = int(names[-1][: -len(_SUFFIX)]) + 1 if names else 0
        self.dropped = 0
        if names:
            logger.info(
                "%s: %d record(s) left from an earlier run; sending them first", folder, len(names)
            )

    def __len__(self) -> int:
        with self._cond:
            return len(self._names)

    def put(self, payload: bytes) -> None:
        """Store `payload` as the newest record (dropping the oldest when full)."""
        with self._cond:
            name = f"{self._next:016d}{_SUFFIX}"
            self._next += 1
            write_bytes_atomic(self.folder / name, payload)
            self._names.append(name)
            while len(self._names) > self.max_pending:
                oldest = self._names.popleft()
                (self.folder / oldest).unlink(missing_ok=True)
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    logger.warning(
                        "%s: output buffer full (%d records); dropped the oldest (%d so far)",
                        self.folder,
                        self.max_pending,
                        self.dropped,
                    )
            self._cond.notify_all()

    def peek(self, timeout_s: float) -> tuple[str, bytes] | None:
        """(name, payload) of the oldest record, waiting up to `timeout_s`; None if empty."""
        with self._cond:
            if not self._names:
                self._cond.wait(timeout_s)
            if not self._names:
                return None
            name = self._names[0]
        return name, (self.folder / name).read_bytes()

    def ack(self, name: str) -> None:
        """Delete record `name` (delivered)."""
        with self._cond:
            if self._names and self._names[0] == name:
                self._names.popleft()
            (self.folder / name).unlink(missing_ok=True)
            self._cond.notify_all()

    def wait_empty(self, timeout_s: float) -> bool:
        """Wait until every record was delivered; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._names:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True


@dataclass
class OutputStats:
    """Counts of one output (thread-safe enough: ints updated by one thread)."""

    sent: int = 0
    failures: int = 0


class SpoolSink:
    """A ResultSink: records go to a Spool; a thread delivers them with `send(payload) -> ok`.

    Args:
        name: "mqtt" or "webhook" (logs, metrics).
        spool: the Spool.
        send: delivers one payload; True when confirmed. Exceptions count as failures.
        flush_timeout_s: on close, how long to wait for the spool to drain (the rest stays on
            disk for the next run).
        retry_max_s: largest wait between failed attempts (doubles from 0.1 s).
        on_close: called after the thread stopped (closes the client).
    """

    def __init__(
        self,
        name: str,
        spool: Spool,
        send: Callable[[bytes], bool],
        *,
        flush_timeout_s: float = 10.0,
        retry_max_s: float = 5.0,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.spool = spool
        self._send = send
        self.flush_timeout_s = flush_timeout_s
        self.retry_max_s = retry_max_s
        self._on_close = on_close
        self.stats = OutputStats()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"edgead-{name}", daemon=True)
        self._thread.start()

    def publish(self, record: dict[str, Any]) -> None:
        """Spool `record` (JSON); returns at once."""
        self.spool.put(json.dumps(record, allow_nan=False, separators=(",", ":")).encode())

    @property
    def pending(self) -> int:
        """Records not yet delivered."""
        return len(self.spool)

    def _run(self) -> None:
        delay = 0.1
        failing = False
        while not self._stop.is_set():
            item = self.spool.peek(timeout_s=0.2)
            if item is None:
                continue
            name, payload = item
            try:
                ok = bool(self._send(payload))
            except Exception as exc:  # noqa: BLE001 - a failed delivery is retried, logged once
                logger.debug("%s: delivery raised %r", self.name, exc)
                ok = False
            if ok:
                self.spool.ack(name)
                self.stats.sent += 1
                if failing:
                    logger.info("%s: delivering again (%d pending)", self.name, self.pending)
                failing, delay = False, 0.1
                continue
            self.stats.failures += 1
            if not failing:
                logger.warning(
                    "%s: delivery failed; buffering on disk in %s and retrying",
                    self.name,
                    self.spool.folder,
                )
                failing = True
            self._stop.wait(delay)
            delay = min(delay * 2.0, self.retry_max_s)

    def close(self) -> None:
        """Wait up to flush_timeout_s for delivery, then stop the thread (idempotent)."""
        if self._stop.is_set():
            return
        if not self.spool.wait_empty(self.flush_timeout_s):
            logger.warning(
                "%s: %d record(s) not delivered yet; kept in %s for the next run",
                self.name,
                self.pending,
                self.spool.folder,
            )
        self._stop.set()
        self._thread.join(timeout=5.0)
        if self._on_close is not None:
            self._on_close()


# -------------------------------------------------------------------------------------- MQTT


@dataclass(frozen=True)
class MqttTarget:
    """A parsed mqtt://[user[:password]@]host[:port]/topic URL."""

    host: str
    port: int
    topic: str
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse_mqtt_url(url: str, option: str = "--mqtt") -> MqttTarget:
    """MqttTarget from mqtt://host:1883/topic (mqtts:// for TLS, default ports 1883 / 8883);
    `option` names the CLI option in errors.

    Raises:
        ConfigError: another scheme, no host, or no topic.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(f"{option} expects mqtt://host:port/topic (or mqtts://), got {url!r}")
    topic = unquote(parts.path.lstrip("/"))
    if not parts.hostname or not topic or "+" in topic or "#" in url:
        raise ConfigError(
            f"{option} {url!r} needs a host and a topic without wildcards, "
            "e.g. mqtt://127.0.0.1:1883/line1/inspection"
        )
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise ConfigError(f"{option} {url!r}: bad port ({exc})") from exc
    return MqttTarget(
        host=parts.hostname,
        port=port,
        topic=topic,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=tls,
    )


def mqtt_client(target: MqttTarget, client_id: str, option: str) -> tuple[Any, Any]:
    """(the paho.mqtt.client module, a paho Client for `target`: credentials, TLS, 1-10 s
    reconnect back-off; not connected yet).

    Raises:
        ConfigError: paho-mqtt is not installed (`option` names what needed it).
    """
    try:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
    except ImportError as exc:
        raise ConfigError(
            f"{option} needs paho-mqtt: pip install 'edgead[station]' (or paho-mqtt)"
        ) from exc
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id)
    if target.username:
        client.username_pw_set(target.username, target.password)
    if target.tls:
        client.tls_set()
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    return mqtt, client


def mqtt_sink(
    url: str,
    outbox: Path,
    client_id: str,
    *,
    max_pending: int = DEFAULT_MAX_PENDING,
    ack_timeout_s: float = 5.0,
    flush_timeout_s: float = 10.0,
) -> SpoolSink:
    """A SpoolSink publishing each record to the URL's topic with QoS 1.

    paho-mqtt reconnects in the background (1..10 s back-off); while it is disconnected the
    records wait in the spool. A publish counts as delivered when its PUBACK arrives within
    `ack_timeout_s`.

    Raises:
        ConfigError: bad URL, or paho-mqtt is not installed.
    """
    target = parse_mqtt_url(url)
    mqtt, client = mqtt_client(target, client_id, "--mqtt")

    def on_connect(_c: Any, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        logger.info("mqtt: connected to %s:%d (%s)", target.host, target.port, reason)

    def on_disconnect(_c: Any, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        logger.info("mqtt: disconnected from %s:%d (%s)", target.host, target.port, reason)

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.connect_async(target.host, target.port, keepalive=30)
    client.loop_start()

    def send(payload: bytes) -> bool:
        if not client.is_connected():
            return False
        info = client.publish(target.topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        info.wait_for_publish(timeout=ack_timeout_s)
        return info.is_published()

    def close() -> None:
        client.disconnect()
        client.loop_stop()

    return SpoolSink(
        "mqtt",
        Spool(outbox, max_pending),
        send,
        flush_timeout_s=flush_timeout_s,
        on_close=close,
    )


# ----------------------------------------------------------------------------------- webhook


def check_webhook_url(url: str) -> None:
    """ConfigError unless `url` is an http(s) URL with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--webhook expects an http:// or https:// URL, got {url!r}")


def webhook_sink(
    url: str,
    outbox: Path,
    *,
    max_pending: int = DEFAULT_MAX_PENDING,
    timeout_s: float = 5.0,
    flush_timeout_s: float = 10.0,
) -> SpoolSink:
    """A SpoolSink POSTing each record as JSON to `url` (delivered on any 2xx; else retried).

    Raises:
        ConfigError: not an http(s) URL.
    """
    check_webhook_url(url)

    def send(payload: bytes) -> bool:
        request = urllib.request.Request(
            url, data=payload, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
                return 200 <= response.status < 300
        except urllib.error.HTTPError as exc:
            logger.debug("webhook %s answered %d", url, exc.code)
            return False
        except (urllib.error.URLError, OSError) as exc:
            logger.debug("webhook %s unreachable: %s", url, exc)
            return False

    return SpoolSink("webhook", Spool(outbox, max_pending), send, flush_timeout_s=flush_timeout_s)


def outbox_dir(out_dir: Path | None, outbox: Path | None, kind: str) -> Path:
    """OUTBOX/kind, else OUT/outbox/kind; ConfigError when neither folder is given."""
    if outbox is not None:
        return Path(outbox) / kind
    if out_dir is not None:
        return Path(out_dir) / "outbox" / kind
    raise ConfigError(
        f"--{kind} buffers results on disk while the receiver is down: give --out or --outbox"
    )
