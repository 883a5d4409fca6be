"""Frame capture for the inspection loop: sources, a capture thread and a bounded queue. Torch-free.

A source is a camera index ("0"), a V4L2 device ("/dev/video0"), an RTSP/HTTP URL, a video file or
a folder of images. OpenCV opens streams (`cv2.VideoCapture`); folder images go through the one
decoder of training and `predict` (`edgead.ops.decode.read_frame`).

The capture thread reads frames and puts them in a small bounded queue. When scoring falls behind,
the drop policy decides: "oldest" discards the frame waiting longest (keep the latest: live
cameras), "newest" discards the frame just read, "none" blocks the reader (files and folders).
Every frame read is counted exactly once as queued or dropped; a corrupt frame is queued with its
`problem` (no image) so the loop writes its result line and counts it corrupt, and the loop can
check `scored + dropped + corrupt == read` at the end. Only live sources must keep the size of
their first frame; a folder may mix image sizes.

A live source that fails or stalls is reopened with exponential back-off (bounded delay, logged);
a file or folder ends at its last frame unless `loop=True` replays it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edgead.errors import ConfigError, DataError
from edgead.ops.decode import IMAGE_SUFFIXES, list_image_files, read_frame

logger = logging.getLogger(__name__)

DROP_POLICIES = ("oldest", "newest", "none")
_URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


class FrameReader(Protocol):
    """What the capture thread reads from (cv2.VideoCapture has this shape)."""

    def read(self) -> tuple[bool, np.ndarray | None]:
        """(ok, frame): ok False means end of stream or a failed read; frame may be None."""

    def release(self) -> None:
        """Free the device or file."""


@dataclass(frozen=True)
class SourceSpec:
    """A parsed `--source`: kind in {"camera", "device", "url", "file", "folder"}."""

    kind: str
    target: str | int

    @property
    def is_live(self) -> bool:
        """True for cameras and streams (reconnect on failure, drop oldest by default)."""
        return self.kind in ("camera", "device", "url")

    def __str__(self) -> str:
        return f"{self.kind} {self.target}"


def parse_source(source: str) -> SourceSpec:
    """A SourceSpec from a `--source` string.

    Raises:
        DataError: a local path that does not exist (a URL or device is tried later).
    """
    text = source.strip()
    if text.isdigit():
        return SourceSpec("camera", int(text))
    if text.lower().startswith(_URL_SCHEMES):
        return SourceSpec("url", text)
    if text.startswith("/dev/"):
        return SourceSpec("device", text)
    path = Path(text).expanduser()
    if path.is_dir():
        return SourceSpec("folder", str(path))
    if path.is_file():
        return SourceSpec("file", str(path))
    raise DataError(
        f"source {source!r} is not a camera index, URL, device or existing "
        "file/folder; check the path, or give a camera index such as 0"
    )


class FolderReader:
    """Images of a folder in name order, decoded by `edgead.ops.decode.read_frame` (the decoder
    of training and `predict`): uint8 (H, W) gray or (H, W, 3) BGR.

    `read()` returns (True, None) for a file that cannot be decoded (a corrupt frame) and
    (False, None) after the last file.
    """

    def __init__(self, folder: str | Path, skip: Collection[str] = ()) -> None:
        """List the images of `folder`, leaving out the file names in `skip` (a resumed run).

        Raises:
            DataError: the folder holds no images.
        """
        files = list_image_files(folder)
        if not files:
            raise DataError(f"folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        self.files = [p for p in files if p.name not in skip]
        self.skipped = len(files) - len(self.files)
        self.last_name: str | None = None  # file name of the image `read` returned last
        self._next = 0

    def read(self) -> tuple[bool, np.ndarray | None]:
        """The next image, (True, None) if it cannot be decoded, (False, None) at the end."""
        if self._next >= len(self.files):
            return False, None
        path = self.files[self._next]
        self.last_name = path.name
        self._next += 1
        try:
            return True, read_frame(path)
        except DataError as exc:
            logger.debug("corrupt frame %s: %s", path, exc)
            return True, None

    def release(self) -> None:
        """Nothing to free."""


def open_reader(spec: SourceSpec, timeout_ms: int = 5000) -> FrameReader:
    """Open `spec` with OpenCV; raises DataError when it cannot be opened."""
    if spec.kind == "folder":
        return FolderReader(str(spec.target))
    if spec.kind == "url":
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            timeout_ms,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            timeout_ms,
        ]
        cap = cv2.VideoCapture(str(spec.target), cv2.CAP_FFMPEG, params)
    elif spec.kind == "device":
        cap = cv2.VideoCapture(str(spec.target), cv2.CAP_V4L2)
    else:
        cap = cv2.VideoCapture(spec.target)
    if not cap.isOpened():
        cap.release()
        raise DataError(f"OpenCV cannot open {spec}")
    return cap


@dataclass(frozen=True, kw_only=True)
class CaptureConfig:
    """How the capture thread behaves.

    Attributes:
        queue_size: frames the queue holds (2-4 keeps latency low).
        drop: "oldest" | "newest" | "none" (see the module docstring).
        loop: replay a file or folder from the start at its end.
        max_frames: stop after this many frames read (None: no limit).
        open_retries: attempts to open the source at start before DataError.
        reconnect_retries: attempts per outage of a live source (None: forever).
        backoff_initial_s, backoff_max_s: first and largest wait between attempts (doubles).
        timeout_ms: open/read timeout handed to OpenCV for URLs.
        pace_fps: read at most this many frames per second (replay a file or folder as a
            camera would deliver it); None reads as fast as the source allows.
    """

    queue_size: int = 2
    drop: str = "oldest"
    loop: bool = False
    max_frames: int | None = None
    open_retries: int = 3
    reconnect_retries: int | None = None
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    timeout_ms: int = 5000
    pace_fps: float | None = None

    def validate(self) -> None:
        """Raise ConfigError on a bad value."""
        if self.drop not in DROP_POLICIES:
            raise ConfigError(
                f"--drop must be one of {', '.join(DROP_POLICIES)}; got {self.drop!r}"
            )
        if not 1 <= self.queue_size <= 64:
            raise ConfigError(f"queue_size must be 1..64, got {self.queue_size}")
        if self.open_retries < 1:
            raise ConfigError(f"open_retries must be >= 1, got {self.open_retries}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"--max-frames must be >= 1, got {self.max_frames}")
        if self.pace_fps is not None and self.pace_fps <= 0:
            raise ConfigError(f"--fps must be > 0, got {self.pace_fps}")


@dataclass
class Frame:
    """One captured frame.

    Attributes:
        index: 0-based count of frames read from the source (corrupt ones included).
        image: uint8 (H, W, 3) BGR, (H, W, 4) BGRA or (H, W) gray, as OpenCV returned it;
            None for a corrupt frame (then `problem` says why).
        timestamp: wall-clock time of capture, seconds since the epoch.
        captured_at: time.perf_counter() at capture, s (for queue latency).
        source_item: the file name for folder sources, else None (streams: `index` is the
            position).
        problem: why the frame cannot be scored (corrupt), or None.
    """

    index: int
    image: np.ndarray | None
    timestamp: float
    captured_at: float
    source_item: str | None = None
    problem: str | None = None


class EndOfStream:
    """Queue sentinel: the source ended (`reason`) or failed for good (`error`)."""

    def __init__(self, reason: str, error: Exception | None = None) -> None:
        self.reason = reason
        self.error = error


def backoff_delays(initial_s: float, max_s: float) -> Iterator[float]:
    """initial, 2*initial, 4*initial, ... capped at max_s (seconds)."""
    delay = initial_s
    while True:
        yield min(delay, max_s)
        delay = min(delay * 2.0, max_s)


def frame_problem(image: object, reference_shape: tuple[int, ...] | None) -> str | None:
    """Why `image` is not a usable frame, or None when it is.

    Usable: a non-empty uint8 ndarray of shape (H, W), (H, W, 1|3|4) matching `reference_shape`
    (the first good frame since the source was opened) when that is given.
    """
    if image is None:
        return "no image (None)"
    if not isinstance(image, np.ndarray):
        return f"not an array ({type(image).__name__})"
    if image.size == 0:
        return "empty image"
    if image.dtype != np.uint8:
        return f"dtype {image.dtype}, expected uint8"
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        return f"shape {image.shape}, expected (H, W) or (H, W, 1|3|4)"
    if reference_shape is not None and image.shape != reference_shape:
        return f"shape {image.shape} differs from the stream's {reference_shape}"
    return None


class CaptureCounters:
    """Thread-safe counts of what the capture thread did."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.read = 0
        self.queued = 0
        self.dropped = 0
        self.corrupt = 0
        self.reconnects = 0
        self.outages = 0

    def add(self, **deltas: int) -> None:
        """Add `deltas` (e.g. read=1, dropped=1) atomically."""
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def snapshot(self) -> dict[str, int]:
        """The counts as a dict."""
        with self._lock:
            return {
                "read": self.read,
                "queued": self.queued,
                "dropped": self.dropped,
                "corrupt": self.corrupt,
                "reconnects": self.reconnects,
                "outages": self.outages,
            }


class CaptureThread(threading.Thread):
    """Reads frames from a source into a bounded queue; see the module docstring.

    Args:
        opener: returns a fresh FrameReader, raising (DataError or anything) when it cannot.
        config: CaptureConfig.
        is_live: reconnect on failure (cameras, streams) instead of ending.
        stop_event: set by the owner to stop; the thread ends soon after (after a blocking read).
        name: shown in log messages.
        sleep: injectable for tests (default time.sleep, but interruptible by stop_event).
    """

    def __init__(
        self,
        opener: Callable[[], FrameReader],
        config: CaptureConfig,
        *,
        is_live: bool,
        stop_event: threading.Event,
        name: str = "source",
    ) -> None:
        super().__init__(name="edgead-capture", daemon=True)
        config.validate()
        self.opener = opener
        self.config = config
        self.is_live = is_live
        self.stop_event = stop_event
        self.source_name = name
        self.queue: queue.Queue[Frame | EndOfStream] = queue.Queue(maxsize=config.queue_size)
        self.counters = CaptureCounters()
        self.last_frame_at: float | None = None  # perf_counter of the last frame read
        self._reader: FrameReader | None = None
        self._reference_shape: tuple[int, ...] | None = None
        self._corrupt_logged = 0

    # -- opening -----------------------------------------------------------------------------
    def open(self) -> None:
        """Open the source in the caller's thread, retrying `open_retries` times with back-off.

        Raises:
            DataError: it could not be opened; says how often it was tried and what failed.
        """
        delays = backoff_delays(self.config.backoff_initial_s, self.config.backoff_max_s)
        last_error: Exception | None = None
        for attempt in range(1, self.config.open_retries + 1):
            try:
                self._reader = self.opener()
                self._reference_shape = None
                return
            except Exception as exc:  # noqa: BLE001 - any failure is retried, then reported
                last_error = exc
                if attempt < self.config.open_retries:
                    delay = next(delays)
                    logger.warning(
                        "cannot open %s (attempt %d/%d: %s); retrying in %.1f s",
                        self.source_name,
                        attempt,
                        self.config.open_retries,
                        exc,
                        delay,
                    )
                    if self.stop_event.wait(delay):
                        break
        raise DataError(
            f"cannot open source {self.source_name} after {self.config.open_retries} "
            f"attempt(s): {last_error}; check the URL/path/camera index, that the "
            "camera is connected and that nothing else holds it"
        ) from last_error

    def _reconnect(self) -> bool:
        """Reopen a live source after an outage; False when stopped or retries ran out."""
        self._release()
        self.counters.add(outages=1)
        delays = backoff_delays(self.config.backoff_initial_s, self.config.backoff_max_s)
        attempt = 0
        while not self.stop_event.is_set():
            attempt += 1
            limit = self.config.reconnect_retries
            if limit is not None and attempt > limit:
                logger.error(
                    "%s did not come back after %d attempts; giving up",
                    self.source_name,
                    self.config.reconnect_retries,
                )
                return False
            delay = next(delays)
            logger.warning(
                "%s lost; reconnecting in %.2f s (attempt %d)", self.source_name, delay, attempt
            )
            if self.stop_event.wait(delay):
                return False
            try:
                self._reader = self.opener()
            except Exception as exc:  # noqa: BLE001 - logged and retried
                logger.warning("reconnect to %s failed: %s", self.source_name, exc)
                continue
            self._reference_shape = None
            self.counters.add(reconnects=1)
            logger.info("%s reconnected after %d attempt(s)", self.source_name, attempt)
            return True
        return False

    def _release(self) -> None:
        if self._reader is not None:
            try:
                self._reader.release()
            except Exception as exc:  # noqa: BLE001 - a failed release must not stop the loop
                logger.warning("releasing %s failed: %s", self.source_name, exc)
            self._reader = None

    # -- the thread --------------------------------------------------------------------------
    def run(self) -> None:
        """Read until stopped, max_frames, end of a non-live source, or a lost live source."""
        end = EndOfStream("stopped")
        try:
            end = self._read_loop()
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            logger.exception("capture thread failed")
            end = EndOfStream("error", exc)
        finally:
            self._release()
            self._put_end(end)

    def _read_loop(self) -> EndOfStream:
        if self._reader is None:
            self.open()
        index = 0
        paced_start = time.perf_counter()
        while not self.stop_event.is_set():
            if self.config.max_frames is not None and index >= self.config.max_frames:
                return EndOfStream("max_frames")
            if self.config.pace_fps is not None:
                wait_s = paced_start + index / self.config.pace_fps - time.perf_counter()
                if wait_s > 0 and self.stop_event.wait(wait_s):
                    break
            try:
                ok, image = self._reader.read()  # type: ignore[union-attr]
            except Exception as exc:  # noqa: BLE001 - a raising read is a failed read
                logger.warning("read from %s raised %s", self.source_name, exc)
                ok, image = False, None
            if not ok:
                if self.is_live:
                    if not self._reconnect():
                        return EndOfStream("stopped" if self.stop_event.is_set() else "source_lost")
                    continue
                if self.config.loop:
                    self._release()
                    self._reader = self.opener()
                    continue
                return EndOfStream("end_of_stream")
            now = time.perf_counter()
            self.last_frame_at = now
            self.counters.add(read=1)
            # Only a live stream must keep its frame size; a folder may mix image sizes.
            problem = frame_problem(image, self._reference_shape if self.is_live else None)
            item = getattr(self._reader, "last_name", None)
            if problem is not None:
                # Queued as a corrupt frame so the loop writes its result line (and counts it).
                self._log_corrupt(index, problem)
                self._offer(Frame(index, None, time.time(), now, item, problem))
            else:
                if self._reference_shape is None:
                    self._reference_shape = image.shape  # type: ignore[union-attr]
                self._offer(Frame(index, image, time.time(), now, item))
            index += 1
        return EndOfStream("stopped")

    def _log_corrupt(self, index: int, problem: str) -> None:
        self._corrupt_logged += 1
        if self._corrupt_logged <= 10 or self._corrupt_logged % 1000 == 0:
            logger.warning(
                "frame %d from %s skipped: %s (corrupt frames so far: %d)",
                index,
                self.source_name,
                problem,
                self._corrupt_logged,
            )

    def _offer(self, frame: Frame) -> None:
        """Queue `frame` under the drop policy; counts it as queued or dropped."""
        policy = self.config.drop
        if policy == "none":
            while not self.stop_event.is_set():
                try:
                    self.queue.put(frame, timeout=0.1)
                    self.counters.add(queued=1)
                    return
                except queue.Full:
                    continue
            self.counters.add(dropped=1)  # stopped while waiting: not scored
            return
        if policy == "newest":
            try:
                self.queue.put_nowait(frame)
                self.counters.add(queued=1)
            except queue.Full:
                self.counters.add(dropped=1)
            return
        while True:  # "oldest": make room by discarding the frame waiting longest
            try:
                self.queue.put_nowait(frame)
                self.counters.add(queued=1)
                return
            except queue.Full:
                try:
                    self.queue.get_nowait()
                    self.counters.add(queued=-1, dropped=1)
                except queue.Empty:
                    continue

    def _put_end(self, end: EndOfStream) -> None:
        """Put the sentinel, making room by dropping the oldest frame if the consumer is gone."""
        while True:
            try:
                self.queue.put(end, timeout=0.1)
                return
            except queue.Full:
                if self.stop_event.is_set():
                    try:
                        self.queue.get_nowait()
                        self.counters.add(queued=-1, dropped=1)
                    except queue.Empty:
                        pass

    def drain(self) -> int:
        """Discard frames still queued after the consumer stopped; counts them as dropped."""
        discarded = 0
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return discarded
            if isinstance(item, Frame):
                discarded += 1
                self.counters.add(queued=-1, dropped=1)
