"""Soak test of `edgead run` with the MPDD PatchCore bundle (224 px) over a looped video.

The CLI runs in a subprocess over an MJPG/avi made here from MPDD test images (224x224 frames,
good and defective), replayed with --loop at a camera's pace (--fps 40, --drop oldest: the scorer
keeps the latest frame, as with a live camera). It serves /metrics (--http), which the test polls
for the frames read; after at least 2,000 it sends SIGTERM. Checked: every frame is accounted for
(scored + dropped + corrupt == read), RSS grows by less than 20 MiB between warm-up (30 frames
scored) and the end, the exit is clean (code 0, stop reason "signal"), results.jsonl holds exactly
one complete JSON line per scored frame, and /metrics agreed with the summary's direction.

Pacing keeps the test near one minute: PatchCore scores only a few frames per second on the
shared 2-core CI machine, so scoring all 2,000 frames would take several minutes there.

The bundle is trained and exported once per session (`edgead train patchcore` + `edgead export`);
set EDGEAD_TEST_MPDD_BUNDLE to an existing bundle to skip that while developing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.integration

MIN_FRAMES = 2000
WARMUP_FRAMES = 30  # scored frames before the RSS baseline is taken
CAMERA_FPS = 40
MAX_RSS_GROWTH_MIB = 20.0
IMAGE_SIZE_PX = 224
SOAK_TIMEOUT_S = 900


def _edgead(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "edgead.cli.main", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def mpdd_dir(shared_datasets: Path) -> Path:
    path = shared_datasets / "mpdd_metal_plate"
    if not (path / "test").is_dir():
        pytest.skip(f"MPDD metal_plate not found under {shared_datasets}")
    return path


@pytest.fixture(scope="session")
def mpdd_bundle(mpdd_run_224: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared MPDD PatchCore run (224 px, conftest) exported to ONNX with the CLI."""
    override = os.environ.get("EDGEAD_TEST_MPDD_BUNDLE")
    if override:
        return Path(override)
    bundle = tmp_path_factory.mktemp("mpdd_patchcore") / "mpdd_patchcore.edgead"
    _edgead("export", str(mpdd_run_224), "--target", "onnx", "--out", str(bundle), timeout=1200)
    return bundle


def _soak_video(mpdd_dir: Path, path: Path) -> Path:
    """MJPG/avi of 16 MPDD test images (8 good, 8 defective) at 224x224 px."""
    good = sorted((mpdd_dir / "test" / "good").glob("*.png"))[:8]
    bad = sorted(
        p for d in (mpdd_dir / "test").iterdir() if d.name != "good" for p in d.glob("*.png")
    )[:8]
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (IMAGE_SIZE_PX, IMAGE_SIZE_PX)
    )
    assert writer.isOpened(), "OpenCV cannot write MJPG/avi here"
    for p in [x for pair in zip(good, bad, strict=True) for x in pair]:
        image = cv2.imread(str(p), cv2.IMREAD_COLOR)
        assert image is not None, p
        size = (IMAGE_SIZE_PX, IMAGE_SIZE_PX)
        writer.write(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
    writer.release()
    return path


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise AssertionError(f"no VmRSS for pid {pid}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _frames_read(port: int) -> int:
    """edgead_frames_read_total from the run's /metrics (0 while it is not up yet)."""
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    except OSError:
        return 0
    match = re.search(rb"^edgead_frames_read_total (\d+)", body, re.MULTILINE)
    return int(match.group(1)) if match else 0


class _LineCounter:
    """Counts newline-terminated lines of a growing file without re-reading it."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.lines = path, 0, 0

    def update(self) -> int:
        if self.path.exists():
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
            cut = chunk.rfind(b"\n") + 1
            self.lines += chunk[:cut].count(b"\n")
            self.offset += cut
        return self.lines


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc for RSS")
def test_soak_run_2000_frames_sigterm(mpdd_dir: Path, mpdd_bundle: Path, tmp_path: Path) -> None:
    video = _soak_video(mpdd_dir, tmp_path / "soak.avi")
    out = tmp_path / "out"
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "edgead.cli.main",
        "run",
        str(mpdd_bundle),
        "--source",
        str(video),
        "--loop",
        "--fps",
        str(CAMERA_FPS),
        "--drop",
        "oldest",
        "--out",
        str(out),
        "--http",
        str(port),
        "--status-every",
        "10",
        "--device",
        "cpu",
    ]
    log = open(tmp_path / "run.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    counter = _LineCounter(out / "results.jsonl")
    rss_warm: float | None = None
    rss_samples: list[tuple[int, float]] = []
    start = time.time()
    read = 0
    try:
        while True:
            assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            assert time.time() - start < SOAK_TIMEOUT_S, f"only {read} frames read in time"
            scored = counter.update()
            if scored >= WARMUP_FRAMES:
                rss = _rss_mib(proc.pid)
                rss_samples.append((scored, rss))
                if rss_warm is None:
                    rss_warm = rss
            read = _frames_read(port)
            if read >= MIN_FRAMES:
                break
            time.sleep(0.5)
        rss_end = _rss_mib(proc.pid)
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    elapsed = time.time() - start
    run_log = (tmp_path / "run.log").read_text()
    assert returncode == 0, run_log[-3000:]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_reason"] == "signal"
    assert summary["read"] >= max(MIN_FRAMES, read)
    assert summary["scored"] + summary["dropped"] + summary["corrupt"] == summary["read"]
    assert summary["accounted"] and summary["corrupt"] == 0
    assert summary["runtime_fallbacks"] == []

    text = (out / "results.jsonl").read_text()
    assert text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]
    assert len(records) == summary["scored"]
    frames = np.array([r["frame"] for r in records])
    assert (np.diff(frames) > 0).all()  # in order, no duplicates
    assert all(isinstance(r["raw_score"], float) and "total" in r["latency_ms"] for r in records)
    assert rss_warm is not None
    growth = rss_end - rss_warm
    peak_after_warmup = max(r for _, r in rss_samples)
    print(
        f"\nsoak: {summary['read']} read, {summary['scored']} scored, {summary['dropped']} "
        f"dropped in {elapsed:.0f} s "
        f"({summary['fps']} fps, p50 {summary['latency_ms'].get('p50')} ms); RSS at frame "
        f"{WARMUP_FRAMES} {rss_warm:.1f} MiB, at the end {rss_end:.1f} MiB (growth "
        f"{growth:+.1f} MiB, peak {peak_after_warmup:.1f} MiB)"
    )
    assert growth < MAX_RSS_GROWTH_MIB, (
        f"RSS grew {growth:.1f} MiB after warm-up ({rss_warm:.1f} -> {rss_end:.1f} MiB)"
    )
    # half the looped frames are defective parts: the detector flags some, not all frames
    flagged = sum(bool(r["is_anomaly"]) for r in records)
    assert 0 < flagged < len(records)
