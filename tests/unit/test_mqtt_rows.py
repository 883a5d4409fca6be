"""MQTT row source (`edgead run BUNDLE --source mqtt://...`): URL checks, an unreachable broker,
and messages turned into rows (the end-to-end run against Mosquitto with a SKAB file is in
tests/integration/test_skab_series.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgead.errors import ConfigError, DataError
from edgead.runtime.mqtt_rows import is_mqtt_source, mqtt_rows
from edgead.runtime.rows_source import SensorRow
from tests._broker import Mosquitto, free_port


def test_bad_url_and_unreachable_broker_are_named() -> None:
    pytest.importorskip("paho.mqtt")
    assert is_mqtt_source("mqtts://h/t") and not is_mqtt_source("plant.csv")
    with pytest.raises(ConfigError, match="--source 'mqtt://127.0.0.1:1883/' needs a host"):
        mqtt_rows("mqtt://127.0.0.1:1883/", None)
    with pytest.raises(ConfigError, match="without wildcards"):
        mqtt_rows("mqtt://127.0.0.1/plant/+", None)
    rows = mqtt_rows(f"mqtt://127.0.0.1:{free_port()}/t", None, connect_timeout_s=0.5)
    with pytest.raises(DataError, match="no subscription within 0.5 s; is the broker running"):
        next(rows)


def test_messages_become_rows_and_bad_ones_carry_the_reason(tmp_path: Path) -> None:
    import paho.mqtt.client as mqtt

    broker = Mosquitto(tmp_path / "broker").start()
    stop = threading.Event()
    got: list[SensorRow] = []
    try:
        url = f"{broker.url_base}/plant/pump"
        rows = mqtt_rows(url, ("a", "b"), stop_event=stop, max_bytes=64)
        reader = threading.Thread(target=_append_each, args=(rows, got))
        reader.start()
        client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        for _ in range(100):  # a probe row until the source has subscribed and received one
            client.publish("plant/pump", b"[0, 0]", qos=1).wait_for_publish(5)
            if got:
                break
            time.sleep(0.1)
        payloads = [b'{"b": 4, "a": 3, "time": "t1"}', b"{oops", b"[" + b"1," * 40 + b"1]"]
        for payload in payloads:
            client.publish("plant/pump", payload, qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 10
        while len([r for r in got if not _is_probe(r)]) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        client.disconnect()
        client.loop_stop()
    finally:
        stop.set()
        broker.stop()
    reader.join(5)
    assert not reader.is_alive()  # the stop event ends the source
    indices = [r.index for r in got]
    assert indices == list(range(len(got)))  # one index per message, in arrival order
    rows = [r for r in got if not _is_probe(r)]
    assert rows[0].time == "t1" and rows[0].values.tolist() == [3.0, 4.0]  # read by name
    assert rows[1].values is None and "Expecting property name" in rows[1].problem
    assert rows[2].values is None and "more than 64 allowed" in rows[2].problem


def _append_each(rows: Iterator[SensorRow], into: list[SensorRow]) -> None:
    """Append each row to `into` as it arrives (the test watches the list)."""
    for row in rows:
        into.append(row)


def _is_probe(row: SensorRow) -> bool:
    return row.values is not None and row.values.tolist() == [0.0, 0.0]
