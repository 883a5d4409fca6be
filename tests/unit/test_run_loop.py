"""Unit tests for the inspection loop, capture thread, HTTP metrics and `edgead run`."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from edgead.errors import BackendUnavailableError, ConfigError, DataError
from edgead.runtime.capture import (
    CaptureConfig,
    CaptureThread,
    FolderReader,
    frame_problem,
    open_reader,
    parse_source,
)
from edgead.runtime.loop import (
    InspectionLoop,
    JsonlWriter,
    LoopConfig,
    parse_roi,
    stop_on_signals,
)
from edgead.runtime.metrics_http import MetricsServer
from edgead.runtime.results import RESULT_KEYS, RESULT_SCHEMA

NORM = {"method": "minmax_threshold", "min": 0.0, "max": 255.0, "threshold": 128.0}


class FakeDetector:
    """Scores a frame by its mean intensity (raw units 0..255); anomalous at >= 128."""

    def __init__(
        self, backend: str = "fake/GPU", fail_at: set[int] | None = None, delay_s: float = 0.0
    ) -> None:
        self.backend = backend
        self.fallbacks: list[str] = []
        self.manifest = SimpleNamespace(normalisation=NORM)
        self.calls = 0
        self.fail_at = fail_at or set()
        self.delay_s = delay_s
        self.closed = False

    def __call__(self, frame: np.ndarray, channel_order: str = "BGR") -> SimpleNamespace:
        call = self.calls
        self.calls += 1
        if call in self.fail_at:
            raise RuntimeError(f"device lost on call {call}")
        if frame.ndim != 3:
            raise DataError(f"fake detector wants (H, W, 3), got {frame.shape}")
        if self.delay_s:
            time.sleep(self.delay_s)
        raw = float(frame.mean())
        return SimpleNamespace(
            raw_score=raw,
            score=float(np.clip((raw - 128) / 255 + 0.5, 0, 1)),
            is_anomaly=raw >= 128.0,
            anomaly_map=np.full(frame.shape[:2], raw, np.float32),
            timings_ms={"preprocess": 0.1, "graph": 0.2},
        )

    def close(self) -> None:
        self.closed = True


class ListReader:
    """Yields the given frames, then (False, None). `None` entries are corrupt frames."""

    def __init__(self, frames: list[np.ndarray | None], repeat_last: bool = False) -> None:
        self.frames = list(frames)
        self.repeat_last = repeat_last
        self.released = False

    def read(self) -> tuple[bool, np.ndarray | None]:
        if not self.frames:
            return False, None
        if self.repeat_last and len(self.frames) == 1:
            return True, self.frames[0].copy()  # type: ignore[union-attr]
        return True, self.frames.pop(0)

    def release(self) -> None:
        self.released = True


def gray(value: int, size: int = 16) -> np.ndarray:
    return np.full((size, size, 3), value, np.uint8)


def make_loop(
    frames: list,
    tmp_path: Path | None,
    *,
    detector: FakeDetector | None = None,
    live: bool = False,
    capture_kw: dict | None = None,
    loop_kw: dict | None = None,
    fallback=None,
    opener=None,
) -> InspectionLoop:
    stop = threading.Event()
    cfg = CaptureConfig(
        **{
            "drop": "none",
            "queue_size": 2,
            "backoff_initial_s": 0.01,
            "backoff_max_s": 0.05,
            **(capture_kw or {}),
        }
    )
    capture = CaptureThread(
        opener or (lambda: ListReader(frames)), cfg, is_live=live, stop_event=stop, name="test"
    )
    capture.open()
    config = LoopConfig(out_dir=tmp_path, status_every_s=0, **(loop_kw or {}))
    return InspectionLoop(
        detector or FakeDetector(), capture, config, stop, fallback_factory=fallback
    )


def read_lines(path: Path) -> list[dict]:
    text = path.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_file_source_every_frame_scored_and_written(tmp_path: Path) -> None:
    frames = [gray(v) for v in (10, 200, 30, 250, 40)]
    summary = make_loop(frames, tmp_path).run()
    assert summary.stop_reason == "end_of_stream"
    assert (summary.read, summary.scored, summary.dropped, summary.corrupt) == (5, 5, 0, 0)
    assert summary.accounted and summary.anomalies == 2
    lines = read_lines(tmp_path / "results.jsonl")
    assert [r["frame"] for r in lines] == [0, 1, 2, 3, 4]
    assert [r["is_anomaly"] for r in lines] == [False, True, False, True, False]
    assert lines[1]["raw_score"] == pytest.approx(200.0)
    assert {"queue", "preprocess", "graph", "score", "total"} <= set(lines[0]["latency_ms"])
    saved = sorted((tmp_path / "anomalies").glob("*.jpg"))
    run_id = summary.run_id
    assert [p.name for p in saved] == [f"{run_id}_frame_00000000{i}.jpg" for i in (1, 3)]
    panel = cv2.imread(str(saved[0]))
    assert panel.shape[0] > 16 and panel.shape[1] > 32  # title strip over frame | overlay
    assert lines[1]["image"] == f"anomalies/{run_id}_frame_000000001.jpg"
    assert all(set(RESULT_KEYS) <= set(r) and r["schema"] == RESULT_SCHEMA for r in lines)
    assert [r["seq"] for r in lines] == [0, 1, 2, 3, 4] and {r["run_id"] for r in lines} == {run_id}
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["accounted"] is True and on_disk["scored"] == 5


def test_corrupt_frames_are_skipped_and_counted(tmp_path: Path) -> None:
    frames = [
        gray(10),
        None,
        np.zeros((0, 0, 3), np.uint8),
        gray(20, size=8),
        np.zeros((16, 16, 3), np.float32),
        gray(30),
        np.zeros((16, 16, 2), np.uint8),
    ]
    summary = make_loop(frames, tmp_path).run()
    # None, empty, float32, 2 channels -> 4 corrupt; a file source may change size (8 px frame)
    assert (summary.read, summary.scored, summary.corrupt) == (7, 3, 4)
    assert summary.accounted
    lines = read_lines(tmp_path / "results.jsonl")
    assert [r["frame"] for r in lines] == list(range(7))  # one line per frame, corrupt included
    assert [r["status"] for r in lines] == ["ok", *["corrupt"] * 2, "ok", "corrupt", "ok"] + [
        "corrupt"
    ]
    assert all(r["is_anomaly"] is None and r["error"] for r in lines if r["status"] != "ok")


def test_live_source_keeps_its_frame_size(tmp_path: Path) -> None:
    frames = [gray(10), gray(20, size=8), gray(30)]
    summary = make_loop(frames, tmp_path, live=True, capture_kw={"max_frames": 3}).run()
    assert (summary.read, summary.scored, summary.corrupt) == (3, 2, 1)
    error = read_lines(tmp_path / "results.jsonl")[1]["error"]
    assert "differs from the stream" in error


def test_detector_rejecting_a_frame_counts_it_corrupt(tmp_path: Path) -> None:
    frames = [np.full((16, 16), 5, np.uint8)] * 3  # gray frames: the fake detector rejects them
    summary = make_loop(frames, tmp_path).run()
    assert (summary.read, summary.scored, summary.corrupt) == (3, 0, 3) and summary.accounted


def test_live_source_reconnects_after_failure(tmp_path: Path) -> None:
    attempts = {"n": 0}

    def opener() -> ListReader:
        attempts["n"] += 1
        if attempts["n"] == 1:
            return ListReader([gray(10)] * 3)  # then fails: camera unplugged
        if attempts["n"] in (2, 3):
            raise DataError("camera not there yet")
        return ListReader([gray(20)], repeat_last=True)  # back, streaming

    loop = make_loop(
        [], tmp_path, live=True, opener=opener, capture_kw={"drop": "oldest", "max_frames": 8}
    )
    summary = loop.run()
    assert summary.stop_reason == "max_frames"
    assert summary.reconnects == 1 and summary.outages == 1
    assert attempts["n"] == 4
    assert summary.read == 8 and summary.accounted
    assert summary.scored >= 4  # the dropped ones (if any) are counted


def test_live_source_that_never_returns_ends_the_run(tmp_path: Path) -> None:
    calls = {"n": 0}

    def opener() -> ListReader:
        calls["n"] += 1
        if calls["n"] == 1:
            return ListReader([gray(10)] * 2)
        raise DataError("gone")

    summary = make_loop(
        [], tmp_path, live=True, opener=opener, capture_kw={"reconnect_retries": 3}
    ).run()
    assert summary.stop_reason == "source_lost"
    assert summary.read == 2 and summary.accounted and calls["n"] == 4


def test_unreadable_source_at_start_raises_clear_error() -> None:
    stop = threading.Event()
    spec = parse_source("rtsp://127.0.0.1:9/no-camera-here")
    cfg = CaptureConfig(open_retries=2, backoff_initial_s=0.01, timeout_ms=2000)
    capture = CaptureThread(
        lambda: open_reader(spec, cfg.timeout_ms),
        cfg,
        is_live=True,
        stop_event=stop,
        name=str(spec),
    )
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"cannot open source url rtsp://127\.0\.0\.1:9.*2 attempt"):
        capture.open()
    assert time.perf_counter() - start < 20


def test_backend_failure_mid_run_falls_back_and_is_recorded(tmp_path: Path) -> None:
    frames = [gray(v) for v in (10, 20, 200, 30, 40)]
    failing = FakeDetector(backend="fake/GPU", fail_at={2})
    replacement = FakeDetector(backend="fake/CPU")
    summary = make_loop(frames, tmp_path, detector=failing, fallback=lambda: replacement).run()
    assert summary.scored == 5 and summary.accounted
    assert failing.closed
    assert summary.backend == "fake/CPU"
    (record,) = summary.runtime_fallbacks
    assert (record.frame_index, record.from_backend, record.to_backend) == (
        2,
        "fake/GPU",
        "fake/CPU",
    )
    assert "device lost" in record.reason
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["runtime_fallbacks"][0]["to_backend"] == "fake/CPU"
    assert read_lines(tmp_path / "results.jsonl")[2]["raw_score"] == pytest.approx(200.0)


def test_backend_failure_without_fallback_left_raises(tmp_path: Path) -> None:
    frames = [gray(10)] * 4
    with pytest.raises(BackendUnavailableError, match="no fallback is left"):
        make_loop(frames, tmp_path, detector=FakeDetector(fail_at={1})).run()
    lines = read_lines(tmp_path / "results.jsonl")  # what was scored is still complete
    assert len(lines) == 1


@pytest.mark.parametrize("policy", ["oldest", "newest"])
def test_slow_scoring_drops_frames_but_accounts_for_all(tmp_path: Path, policy: str) -> None:
    frames = [gray(i) for i in range(60)]
    loop = make_loop(
        frames, tmp_path, detector=FakeDetector(delay_s=0.01), capture_kw={"drop": policy}
    )
    summary = loop.run()
    assert summary.read == 60 and summary.dropped > 0 and summary.accounted
    scored = [r["frame"] for r in read_lines(tmp_path / "results.jsonl")]
    assert scored == sorted(scored) and len(scored) == summary.scored
    if policy == "oldest":
        assert scored[-1] == 59  # the latest frame is kept


def test_pace_fps_delivers_frames_at_camera_rate(tmp_path: Path) -> None:
    start = time.perf_counter()
    summary = make_loop([gray(5)] * 11, tmp_path, capture_kw={"pace_fps": 100.0}).run()
    assert summary.scored == 11
    assert time.perf_counter() - start >= 0.1  # frame 10 is due at 100 ms
    with pytest.raises(ConfigError, match="--fps"):
        CaptureConfig(pace_fps=0).validate()


class StopAfter(FakeDetector):
    """Sets `stop` while scoring call number `n` (as a signal arriving mid-frame would)."""

    def __init__(self, stop: threading.Event, n: int) -> None:
        super().__init__(delay_s=0.002)
        self.stop, self.n = stop, n

    def __call__(self, frame: np.ndarray, channel_order: str = "BGR") -> SimpleNamespace:
        if self.calls == self.n:
            self.stop.set()
        return super().__call__(frame, channel_order)


def test_stop_request_finishes_frame_and_flushes(tmp_path: Path) -> None:
    loop = make_loop(
        [],
        tmp_path,
        live=True,
        opener=lambda: ListReader([gray(7)], repeat_last=True),
        capture_kw={"drop": "oldest"},
    )
    loop.detector = StopAfter(loop.stop_event, 20)
    summary = loop.run()
    assert summary.stop_reason == "signal"
    assert summary.scored == 21 and summary.accounted  # the frame in flight was finished
    assert summary.read >= 21
    assert len(read_lines(tmp_path / "results.jsonl")) == 21


def test_sigterm_sets_the_stop_event() -> None:
    stop = threading.Event()
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):
            if stop.is_set():
                break
            time.sleep(0.01)
    assert stop.is_set()
    assert signal.getsignal(signal.SIGTERM) == before


def test_jsonl_writer_trims_partial_last_line(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text('{"frame": 0}\n{"frame": 1}\n{"fra')
    writer = JsonlWriter(path)
    writer.write({"frame": 2})
    writer.close()
    assert [r["frame"] for r in read_lines(path)] == [0, 1, 2]


def test_stdout_stream_when_no_out_dir(capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    stop = threading.Event()
    cfg = CaptureConfig(drop="none")
    capture = CaptureThread(
        lambda: ListReader([gray(1), gray(2)]), cfg, is_live=False, stop_event=stop
    )
    capture.open()
    summary = InspectionLoop(
        FakeDetector(), capture, LoopConfig(status_every_s=0), stop, stream=sys.stdout
    ).run()
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert summary.scored == 2 and [r["frame"] for r in lines] == [0, 1]


def test_roi_crops_and_rejects_misfit(tmp_path: Path) -> None:
    frame = np.zeros((20, 30, 3), np.uint8)
    frame[5:15, 10:20] = 255
    summary = make_loop([frame], tmp_path, loop_kw={"roi": (10, 5, 10, 10)}).run()
    assert read_lines(tmp_path / "results.jsonl")[0]["raw_score"] == pytest.approx(255.0)
    assert summary.anomalies == 1
    with pytest.raises(ConfigError, match="does not fit the 30x20 frames"):
        make_loop([frame], tmp_path / "b", loop_kw={"roi": (25, 0, 10, 10)}).run()


def test_folder_reader_counts_undecodable_file(tmp_path: Path) -> None:
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"img_{i}.png"), gray(40 * i))
    (tmp_path / "img_1b.png").write_bytes(b"not a png")
    summary = make_loop([], tmp_path / "out", opener=lambda: FolderReader(tmp_path)).run()
    assert (summary.read, summary.scored, summary.corrupt) == (4, 3, 1) and summary.accounted


def test_folder_loop_replays(tmp_path: Path) -> None:
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"img_{i}.png"), gray(10))
    summary = make_loop(
        [],
        tmp_path / "out",
        opener=lambda: FolderReader(tmp_path),
        capture_kw={"loop": True, "max_frames": 10},
    ).run()
    assert summary.read == 10 and summary.scored == 10


def test_parse_source_and_roi(tmp_path: Path) -> None:
    assert parse_source("0").kind == "camera" and parse_source("0").is_live
    assert parse_source("rtsp://cam/stream").kind == "url"
    assert parse_source("/dev/video2").kind == "device"
    assert parse_source(str(tmp_path)).kind == "folder" and not parse_source(str(tmp_path)).is_live
    with pytest.raises(DataError, match="not a camera index"):
        parse_source(str(tmp_path / "missing.avi"))
    assert parse_roi("1,2,3,4") == (1, 2, 3, 4) and parse_roi(None) is None
    for bad in ("1,2,3", "a,b,c,d", "0,0,0,5"):
        with pytest.raises(ConfigError):
            parse_roi(bad)
    with pytest.raises(ConfigError, match="--drop"):
        CaptureConfig(drop="latest").validate()


def test_frame_problem() -> None:
    assert frame_problem(gray(1), None) is None
    assert frame_problem(np.zeros((4, 4), np.uint8), None) is None
    assert "None" in frame_problem(None, None)
    assert "differs" in frame_problem(gray(1, 8), (16, 16, 3))


def test_metrics_http_endpoints() -> None:
    state = {"last": None}

    def collect():
        snap = {
            "scored": 5,
            "corrupt": 1,
            "anomalies": 2,
            "last_score": 0.7,
            "last_scored_at": state["last"],
            "backend": "fake",
            "fallbacks": 0,
            "fps": 3.5,
        }
        counts = {"read": 8, "dropped": 2, "corrupt": 0, "reconnects": 1}
        return counts, snap, {"p50": 10.0, "p95": 20.0, "p99": 30.0}, {"backend": 'b"x'}

    server = MetricsServer(0, collect, stall_after_s=0.0).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        server.observe_latency(12.0)
        server.observe_latency(700.0)
        body = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        assert "edgead_frames_read_total 8.0" in body
        assert "edgead_frames_corrupt_total 1.0" in body
        assert 'edgead_latency_recent_ms{quantile="0.95"} 20.0' in body
        assert 'edgead_info{backend="b\\"x"} 1.0' in body
        # a real histogram (prometheus_client): buckets, _sum and _count
        assert "edgead_latency_seconds_count 2.0" in body
        assert "edgead_latency_seconds_sum 0.712" in body
        assert 'edgead_latency_seconds_bucket{le="0.025"} 1.0' in body
        assert "process_resident_memory_bytes" in body
        with pytest.raises(urllib.error.HTTPError) as err:  # nothing scored yet: stalled
            urllib.request.urlopen(base + "/healthz", timeout=5)
        assert err.value.code == 503
        server.stall_after_s = 60.0
        state["last"] = time.perf_counter()
        health = json.loads(urllib.request.urlopen(base + "/healthz", timeout=5).read())
        assert health["status"] == "ok" and health["scored"] == 5
    finally:
        server.close()


# ------------------------------------------------------------------ with a real (tiny) bundle


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny nn_index bundle from the test detector in `tests.helpers.tiny_detectors` (32 px)."""
    import torch

    from edgead.export import export_detector
    from tests.helpers.tiny_detectors import TinyPatch, TinyPatchConfig, run_meta, synthetic_images

    torch.set_num_threads(1)
    det = TinyPatch(TinyPatchConfig())
    det.fit(synthetic_images(8, seed=0))
    meta = run_meta(det.score(synthetic_images(6, seed=1)).scores)
    out = tmp_path_factory.mktemp("run") / "tiny.edgead"
    parity = np.stack(synthetic_images(2, seed=2) + synthetic_images(2, seed=3, anomalous=True))
    export_detector(det, meta, "onnx", "fp32", out, parity_inputs=parity)
    return out


def write_video(
    path: Path, n_frames: int, size_hw: tuple[int, int] = (48, 64), bright_every: int = 10
) -> Path:
    """MJPG .avi of flat gray frames; every `bright_every`-th frame has a white square."""
    height, width = size_hw
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (width, height))
    assert writer.isOpened(), "OpenCV cannot write MJPG/avi here"
    for i in range(n_frames):
        frame = np.full((height, width, 3), 120, np.uint8)
        if i % bright_every == bright_every - 1:
            frame[height // 4 : height // 2, width // 4 : width // 2] = 255
        writer.write(frame)
    writer.release()
    return path


def test_cli_run_video_with_real_bundle(tiny_bundle: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edgead.cli.main import app

    video = write_video(tmp_path / "v.avi", 30)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(tiny_bundle),
            "--source",
            str(video),
            "--out",
            str(out),
            "--loop",
            "--max-frames",
            "45",
            "--status-every",
            "0",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["read"] == summary["scored"] == 45 and summary["accounted"]
    assert summary["backend"] == "onnxruntime/CPUExecutionProvider"
    lines = read_lines(out / "results.jsonl")
    assert [r["frame"] for r in lines] == list(range(45))
    flagged = {r["frame"] for r in lines if r["is_anomaly"]}
    assert {9, 19, 29, 39} <= flagged  # the frames with the white square
    assert summary["saved_images"] == len(list((out / "anomalies").glob("*.jpg"))) > 0


def test_cli_run_unreadable_url_is_a_clear_error(tiny_bundle: Path) -> None:
    from typer.testing import CliRunner

    from edgead.cli.main import app

    start = time.perf_counter()
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(tiny_bundle),
            "--source",
            "rtsp://127.0.0.1:9/nothing",
            "--open-retries",
            "2",
            "--backoff",
            "0.05",
        ],
    )
    assert result.exit_code == 2
    assert "cannot open source" in result.output and "2 attempt" in result.output
    assert time.perf_counter() - start < 30


def test_cli_run_sigterm_exits_cleanly_with_complete_output(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    video = write_video(tmp_path / "v.avi", 20)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "edgead.cli.main",
        "run",
        str(tiny_bundle),
        "--source",
        str(video),
        "--out",
        str(out),
        "--loop",
        "--status-every",
        "0",
        "--device",
        "cpu",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        results = out / "results.jsonl"
        while time.time() < deadline:
            if results.exists() and results.read_text().count("\n") >= 30:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_reason"] == "signal" and summary["accounted"]
    lines = read_lines(out / "results.jsonl")
    assert len(lines) == summary["scored"] >= 30


def test_run_loop_devices_and_bench_are_torch_free(tiny_bundle: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    video = write_video(tmp_path / "v.avi", 5)
    code = f"""
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
from edgead.runtime.loop import LoopConfig, run_inspection
from edgead.devices import detect_machine, match_profile
import edgead.bench, edgead.runtime.metrics_http
summary = run_inspection({str(tiny_bundle)!r}, {str(video)!r}, device="cpu",
                         config=LoopConfig(out_dir=__import__("pathlib").Path({str(tmp_path)!r}),
                                           status_every_s=0))
assert summary.scored == 5 and summary.accounted, summary
assert match_profile(detect_machine()) is not None
print("torch-free ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "torch-free ok" in proc.stdout
