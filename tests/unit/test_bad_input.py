"""Bad input from a careless operator (issue 15): named errors, options checked before heavy work,
nothing that hangs or grows without bound."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_run_loop import FakeDetector, gray, make_loop
from typer.testing import CliRunner

from edgead.cli.main import app
from edgead.cli.predict import _image_paths
from edgead.errors import ConfigError, DataError
from edgead.ops.image import resize_frame
from edgead.runtime import loop as loop_mod
from edgead.runtime.detector import Detector
from edgead.runtime.loop import run_inspection
from edgead.runtime.metrics_http import MetricsServer
from tests.helpers.tiny_detectors import tiny_bundle


@pytest.fixture(scope="module")
def bundle() -> Path:
    return tiny_bundle("onnx")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_predict_folder_skips_fifos_with_an_image_suffix(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    os.mkfifo(tmp_path / "pipe.png")  # cv2.imread on it would block forever
    assert _image_paths([str(tmp_path)]) == [tmp_path / "a.png"]
    with pytest.raises(DataError, match="neither an image file"):
        _image_paths([str(tmp_path / "pipe.png")])


def test_http_port_out_of_range_is_refused_before_anything_opens(bundle: Path) -> None:
    result = CliRunner().invoke(
        app, ["run", str(bundle), "--source", "/nonexistent/video.mp4", "--http", "70000"]
    )
    assert result.exit_code == 2 and "65535" in result.output
    assert "Traceback" not in result.output
    with pytest.raises(ConfigError, match="0..65535"):  # the source is never opened
        run_inspection(bundle, "/nonexistent/video.mp4", http_port=70000)
    with pytest.raises(ConfigError, match="0..65535"):
        MetricsServer(70000, lambda: ({}, {}, {}, {}))


def _collect() -> tuple:
    return (
        {"read": 0, "dropped": 0, "corrupt": 0, "reconnects": 0},
        {"scored": 0, "corrupt": 0, "anomalies": 0, "fallbacks": 0, "fps": 0.0},
        {},
        {},
    )


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_metrics_server_caps_connections_and_times_out_idle_ones() -> None:
    server = MetricsServer(0, _collect, timeout_s=1.0, max_connections=2).start()
    try:
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
        time.sleep(0.3)
        extra = socket.create_connection(("127.0.0.1", server.port))
        assert _closed_within(extra, 0.8), "a connection over the cap was kept open"
        assert all(_closed_within(s, 3.0) for s in idle), "idle connections were not timed out"
        for sock in [*idle, extra]:
            sock.close()
        with socket.create_connection(("127.0.0.1", server.port)) as sock:  # slots came back
            sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            sock.settimeout(3.0)
            assert sock.recv(64).startswith(b"HTTP/1.0 200")  # within stall_after_s of start
    finally:
        server.close()


def test_fps_is_kept_live_when_status_lines_are_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loop_mod, "FPS_UPDATE_S", 0.0, raising=False)
    loop = make_loop([gray(10) for _ in range(20)], tmp_path, detector=FakeDetector(delay_s=0.005))
    assert loop.config.status_every_s == 0
    loop.run()
    assert loop.stats.snapshot()["fps"] > 0


def test_score_rows_zero_and_ragged_rows(tmp_path: Path) -> None:
    from edgead.export import export_detector
    from tests.helpers.tiny_detectors import TinyRows, TinyRowsConfig, run_meta

    rng = np.random.default_rng(0)
    det = TinyRows(TinyRowsConfig())
    det.fit(rng.normal(size=(50, 3)).astype(np.float32))
    rows = rng.normal(size=(6, 3)).astype(np.float32)
    out = tmp_path / "rows.edgead"
    export_detector(det, run_meta(det.score(rows).scores), "onnx", "fp32", out, parity_inputs=rows)
    with Detector.load(out, device="cpu") as loaded:
        with pytest.raises(DataError, match="non-empty"):
            loaded.score_rows(np.zeros((0, 3), np.float32))
        with pytest.raises(DataError, match="equal-length rows"):
            loaded.score_rows([[1.0, 2.0, 3.0], [1.0, 2.0]])


def test_channel_order_none_is_a_data_error() -> None:
    with pytest.raises(DataError, match="channel_order"):
        resize_frame(np.zeros((8, 8, 3), np.uint8), (4, 4), "area", None)  # type: ignore[arg-type]


def test_image_size_is_bounded_before_training_reads_data(tmp_path: Path) -> None:
    from edgead.training import train_run

    with pytest.raises(ConfigError, match="--image-size 100000"):
        train_run(
            "patchcore",
            tmp_path / "no_data_needed",
            tmp_path / "run",
            {"image_size": 100000, "pretrained": False},
        )
