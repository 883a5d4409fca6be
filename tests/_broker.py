"""A real Mosquitto broker for tests: 127.0.0.1, a free port, a temp config and store.

The broker keeps its persistence file in the test's temp folder, so a persistent subscriber
session (clean_session=False) and its queued QoS 1 messages survive a stop/start, as on a
station whose broker restarts. Tests skip with the reason when the binary is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest


def mosquitto_binary() -> str | None:
    """Path of the mosquitto binary (PATH, then /usr/sbin), or None."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


def require_mosquitto() -> str:
    """The binary, or skip the test with the reason and the fix."""
    binary = mosquitto_binary()
    if binary is None:
        pytest.skip("mosquitto not installed (apt-get install mosquitto; .ci/run installs it)")
    return binary


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mosquitto:
    """start() / stop() / restart on the same port; always call stop() (fixtures do)."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.binary = require_mosquitto()
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.config = folder / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {folder}/",
            "autosave_interval 1",
            f"log_dest file {folder}/mosquitto.log",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # keep write access to the temp store
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Mosquitto:
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                if self.process.poll() is not None:
                    log = (self.folder / "mosquitto.log").read_text(errors="replace")
                    raise RuntimeError(f"mosquitto exited at start: {log[-2000:]}") from None
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within 10 s")

    def stop(self) -> None:
        """SIGTERM (the broker saves its store), then wait."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    @property
    def url_base(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


class Subscriber:
    """A persistent-session QoS 1 subscriber collecting JSON payloads of one topic in order."""

    def __init__(self, port: int, topic: str, client_id: str = "edgead-test-subscriber") -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)

        def on_connect(client: Any, _u: Any, _f: Any, _reason: Any, _p: Any) -> None:
            client.subscribe(topic, qos=1)

        def on_subscribe(*_args: Any) -> None:
            self._subscribed.set()

        def on_message(_c: Any, _u: Any, message: Any) -> None:
            with self._lock:
                self.messages.append(json.loads(message.payload))

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("test subscriber could not subscribe within 10 s")

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, n: int, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Payloads once at least `n` distinct (run_id, seq) arrived, or what came by timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.received()
            if len({(m.get("run_id"), m.get("seq")) for m in got}) >= n:
                return got
            time.sleep(0.1)
        return self.received()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def first_occurrences(messages: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """(run_id, seq) of each message the first time it arrived (at-least-once dedup)."""
    seen: dict[tuple[str, int], None] = {}
    for m in messages:
        seen.setdefault((m["run_id"], m["seq"]), None)
    return list(seen)
