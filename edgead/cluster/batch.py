"""Batch scoring of image archives into one Parquet file, resumable, in one process. No Ray.

    inputs (folder | glob | text file | Parquet of paths) -> list_inputs -> paths
    paths - already scored (ResultStore.done_paths) -> batches -> BatchScorer -> part files
    part files + an earlier results file -> ResultStore.finalize -> --out (one row per path)

`BatchScorer` is the unit of work both here and in `edgead.cluster.ray_batch`, where Ray Data runs
it as an actor pool (one `Detector` per actor, loaded once). A file that cannot be read or scored
becomes a row with `error` set; it never stops the job, and a re-run retries it.

Crash safety: results are written as part files beside `--out` (`<out>.parts/part-*.parquet`),
each one written to a temporary name, fsynced and renamed, so a killed job leaves only whole
files. `finalize` merges them with the earlier `--out` (keeping the newest row per path), writes
`--out` atomically, and only then deletes the parts; a crash between the two loses nothing.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgead.cluster import require_module
from edgead.errors import ConfigError, DataError, EdgeadError

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger(__name__)

#: Timing columns (ms): image decode, then the detector's stages (`Result.timings_ms`).
TIMING_STAGES = ("read", "preprocess", "graph", "search", "postprocess")
_GLOB_CHARS = set("*?[")
Progress = Callable[[int, int, str], None]


def result_schema() -> pa.Schema:
    """Arrow schema of a results file: one row per input path.

    path (absolute), raw_score (detector units), score (0..1, threshold 0.5), is_anomaly
    (null when uncalibrated or failed), <stage>_ms timings, map_path (overlay PNG or null),
    error (null when scored), worker ("host:pid" of the process that scored it).
    """
    pa = require_module("pyarrow", "edgead batch")
    return pa.schema(
        [
            ("path", pa.string()),
            ("raw_score", pa.float64()),
            ("score", pa.float64()),
            ("is_anomaly", pa.bool_()),
            *[(f"{stage}_ms", pa.float64()) for stage in TIMING_STAGES],
            ("map_path", pa.string()),
            ("error", pa.string()),
            ("worker", pa.string()),
        ]
    )


@dataclass(frozen=True, kw_only=True)
class BatchOptions:
    """Options of a batch job.

    Attributes:
        batch_size: images per call to the scorer (and per Ray Data batch).
        device, backend, threads: passed to `Detector.load` in every scorer.
        maps_dir: folder for anomaly-map overlays (PNG), one per image; None: no maps. With
            Ray on several nodes it must be shared storage.
        flush_rows: rows buffered before a part file is written (the work a crash can lose).
        flush_s: also write a part after this many seconds with rows waiting.
        trusted_keys: Ed25519 public key paths the bundle must be signed by (every scorer
            checks them; see `Detector.load`); None: signatures are not checked.
    """

    batch_size: int = 16
    device: str = "cpu"
    backend: str | None = None
    threads: int | None = None
    maps_dir: Path | None = None
    flush_rows: int = 1024
    flush_s: float = 30.0
    trusted_keys: tuple[str, ...] | None = None

    def validate(self) -> None:
        """ConfigError for a value out of range (checked before any heavy work)."""
        for name in ("batch_size", "flush_rows"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        if self.flush_s <= 0:
            raise ConfigError(f"flush_s must be > 0, got {self.flush_s}")


@dataclass
class BatchSummary:
    """What a batch job did. `rows` counts the rows of `--out` after the merge."""

    inputs: int
    skipped: int
    scored: int
    failed: int
    rows: int
    seconds: float
    engine: str
    first_result_s: float | None = None  # from the call to the first scored batch (start-up)

    @property
    def images_per_s(self) -> float:
        """Images scored or failed in this run per second of wall time."""
        return (self.scored + self.failed) / self.seconds if self.seconds > 0 else 0.0


# ------------------------------------------------------------------------------------ inputs
def list_inputs(data: str | Path) -> list[str]:
    """Absolute image paths named by `data`, in order, without duplicates.

    Args:
        data: a folder (searched recursively for image suffixes, sorted), a glob pattern
            (`**` recursive), a text file with one path per line (blank lines and `#` comments
            skipped), or a Parquet file with a `path` column. Relative paths are taken from the
            current directory.

    Raises:
        DataError: nothing matches, the list file is unreadable, or the Parquet file has no
            `path` column.
    """
    from edgead.runtime.capture import IMAGE_SUFFIXES

    text = str(data)
    path = Path(text)
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        paths = [str(p) for p in found if p.is_file()]
    elif path.is_file() and path.suffix.lower() == ".parquet":
        paths = _paths_from_parquet(path)
    elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        paths = [text]
    elif path.is_file():
        paths = _paths_from_text(path)
    elif _GLOB_CHARS & set(text):
        paths = sorted(p for p in glob.glob(text, recursive=True) if Path(p).is_file())
    else:
        raise DataError(
            f"--data {text}: no such folder or file; give a folder of images, a glob pattern, "
            "a text file of paths or a Parquet file with a 'path' column"
        )
    unique = list(dict.fromkeys(os.path.abspath(p) for p in paths))
    if len(unique) < len(paths):
        logger.info("--data %s: dropped %d duplicate path(s)", text, len(paths) - len(unique))
    if not unique:
        raise DataError(f"--data {text} names no images ({', '.join(IMAGE_SUFFIXES)})")
    return unique


def _paths_from_text(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"--data {path}: cannot read it as a UTF-8 list of paths ({exc})") from exc
    return [s for s in (line.strip() for line in lines) if s and not s.startswith("#")]


def _paths_from_parquet(path: Path) -> list[str]:
    pq = require_module("pyarrow.parquet", "edgead batch")
    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise DataError(f"--data {path}: not a readable Parquet file ({exc})") from exc
    if "path" not in schema.names:
        raise DataError(f"--data {path}: no 'path' column (columns: {', '.join(schema.names)})")
    return [str(p) for p in pq.read_table(path, columns=["path"]).column("path").to_pylist() if p]


# ------------------------------------------------------------------------------------ scoring
class BatchScorer:
    """Scores a batch of image paths with one `Detector`, loaded once (a Ray Data actor too).

    Args:
        bundle: path of the `.edgead` bundle (must be readable where the scorer runs).
        options: BatchOptions (device, backend, threads, maps_dir).
    """

    def __init__(self, bundle: str | Path, options: BatchOptions) -> None:
        from edgead.runtime import Detector

        self.options = options
        self.detector = Detector.load(
            bundle,
            device=options.device,
            backend=options.backend,
            threads=options.threads,
            trusted_keys=options.trusted_keys,
        )
        try:
            check_image_bundle(self.detector.manifest.modality, bundle)
        except ConfigError:
            self.detector.close()
            raise
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Result rows (`result_schema()`) for a table with a `path` column, one row per path."""
        pa = require_module("pyarrow", "edgead batch")
        rows = [self.score_path(str(p)) for p in batch.column("path").to_pylist()]
        return pa.Table.from_pylist(rows, schema=result_schema())

    def score_path(self, path: str) -> dict[str, Any]:
        """One result row; read or scoring failures give a row with `error` set."""
        from edgead.ops.decode import read_frame

        row: dict[str, Any] = {"path": path, "worker": self.worker}
        t0 = time.perf_counter()
        try:
            frame = read_frame(path)  # the decoder of training, predict and run
            row["read_ms"] = (time.perf_counter() - t0) * 1e3
            result = self.detector(frame, channel_order="BGR")
        except EdgeadError as exc:
            return {**row, "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - recorded per file, the job goes on
            logger.warning("scoring %s failed: %r", path, exc)
            return {**row, "error": f"{type(exc).__name__}: {exc}"}
        row.update(
            raw_score=result.raw_score,
            score=result.score,
            is_anomaly=result.is_anomaly,
            **{f"{k}_ms": float(v) for k, v in result.timings_ms.items()},
        )
        if self.options.maps_dir is not None and result.anomaly_map is not None:
            row["map_path"] = self._write_map(path, frame, result.anomaly_map)
        return row

    def _write_map(self, path: str, frame: np.ndarray, anomaly_map: np.ndarray) -> str | None:
        """Overlay PNG named <stem>_<hash of the path>_map.png (stems repeat across stations)."""
        from edgead.ops.image import to_rgb
        from edgead.ops.overlay import save_panel, score_panel

        digest = hashlib.sha1(path.encode()).hexdigest()[:12]
        target = Path(self.options.maps_dir or ".") / f"{Path(path).stem}_{digest}_map.png"
        norm = self.detector.manifest.normalisation
        try:
            panel = score_panel(to_rgb(frame, "BGR"), anomaly_map, norm, Path(path).name)
            written = save_panel(target, panel)
        except DataError as exc:
            logger.warning("no map for %s: %s", path, exc)
            return None
        return str(written)

    def close(self) -> None:
        """Release the detector."""
        self.detector.close()


# ------------------------------------------------------------------------------------ storage
class ResultStore:
    """`--out` plus its part files: which paths are done, append parts, merge at the end.

    Args:
        out: the results Parquet file; parts live in `<out>.parts/`.
    """

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        if self.out.is_dir():
            raise ConfigError(
                f"--out {self.out} is a folder; give a file name like results.parquet"
            )
        self.parts_dir = self.out.with_name(self.out.name + ".parts")
        self._count = 0

    def _files(self) -> list[Path]:
        parts = sorted(self.parts_dir.glob("part-*.parquet")) if self.parts_dir.is_dir() else []
        return ([self.out] if self.out.is_file() else []) + parts

    def _read_all(self) -> pa.Table:
        pa = require_module("pyarrow", "edgead batch")
        pq = require_module("pyarrow.parquet", "edgead batch")
        schema = result_schema()
        tables = []
        for file in self._files():
            try:
                table = pq.read_table(file)
            except Exception as exc:  # noqa: BLE001 - pyarrow raises several types
                raise DataError(
                    f"{file} is not a readable results file ({exc}); move it away to start over"
                ) from exc
            missing = [n for n in schema.names if n not in table.column_names]
            if missing:
                raise DataError(f"{file} lacks result columns {missing}; is it an edgead result?")
            tables.append(table.select(schema.names).cast(schema))
        return pa.concat_tables(tables) if tables else schema.empty_table()

    def done_paths(self) -> set[str]:
        """Paths that already have a row without error (skipped by a re-run)."""
        table = self._read_all()
        ok = table.filter(table.column("error").is_null())
        return set(ok.column("path").to_pylist())

    def append(self, table: pa.Table) -> Path:
        """Write `table` as a new part file (temporary name, fsync, rename); its path."""
        from edgead._io import atomic_open

        pq = require_module("pyarrow.parquet", "edgead batch")
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        self._count += 1
        name = f"part-{time.time_ns():020d}-{os.getpid()}-{self._count:06d}.parquet"
        with atomic_open(self.parts_dir / name, "wb") as fh:
            pq.write_table(table, fh)
        return self.parts_dir / name

    def finalize(self) -> pa.Table:
        """Merge `--out` and the parts (newest row per path wins), sorted by path; write `--out`
        atomically, then delete the parts. Returns the merged table."""
        from edgead._io import atomic_open

        pq = require_module("pyarrow.parquet", "edgead batch")
        files = self._files()
        table = self._read_all()
        paths = table.column("path").to_pylist()
        newest = {p: i for i, p in enumerate(paths)}
        if len(newest) < len(paths):
            table = table.take(np.fromiter(sorted(newest.values()), dtype=np.int64))
        table = table.sort_by("path")
        with atomic_open(self.out, "wb") as fh:
            pq.write_table(table, fh)
        for file in files:
            if file != self.out:
                file.unlink()
        with contextlib.suppress(OSError):
            self.parts_dir.rmdir()
        return table


class PartWriter:
    """Buffers result tables and writes a part when `flush_rows` rows or `flush_s` seconds pile up.

    Also counts scored/failed rows and drops a second row for a path already written in this run
    (a retried task must not give an input two rows).
    """

    def __init__(self, store: ResultStore, options: BatchOptions, total: int, progress: Progress):
        self.store, self.options, self.total, self.progress = store, options, total, progress
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._last_flush = time.monotonic()
        self._seen: set[str] = set()
        self.first_result_at: float | None = None  # time.perf_counter() of the first batch
        self.scored = 0
        self.failed = 0

    def add(self, table: pa.Table) -> None:
        """Take the result rows of one batch."""
        import pyarrow.compute as pc

        if self.first_result_at is None:
            self.first_result_at = time.perf_counter()
        paths = table.column("path").to_pylist()
        if self._seen.intersection(paths):
            keep = [p not in self._seen for p in paths]
            logger.warning("dropped %d repeated result row(s)", len(keep) - sum(keep))
            table = table.filter(keep)
            paths = table.column("path").to_pylist()
        self._seen.update(paths)
        errors = int(pc.sum(table.column("error").is_valid()).as_py() or 0)
        self.failed += errors
        self.scored += table.num_rows - errors
        self._buffer.append(table)
        self._buffered += table.num_rows
        if (
            self._buffered >= self.options.flush_rows
            or time.monotonic() - self._last_flush >= self.options.flush_s
        ):
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one part file."""
        import pyarrow as pa

        if self._buffer:
            self.store.append(pa.concat_tables(self._buffer))
            self._buffer, self._buffered = [], 0
        self._last_flush = time.monotonic()
        self.progress(self.scored + self.failed, self.total, "scored")


def _no_progress(done: int, total: int, description: str) -> None:
    """Default progress callback: does nothing."""


def check_image_bundle(modality: str, bundle: str | Path) -> None:
    """ConfigError unless the bundle scores images (batch jobs read image files)."""
    if modality != "image":
        raise ConfigError(
            f"{bundle} scores tabular rows; edgead batch scores image files "
            "(use `edgead predict` or `edgead serve` for rows)"
        )


def plan_batch(
    bundle: str | Path, data: str | Path, out: str | Path, options: BatchOptions
) -> tuple[list[str], list[str], ResultStore]:
    """(all input paths, paths still to score, store), after checking options and the bundle.

    Raises:
        ConfigError: bad options or a tabular bundle. DataError: no inputs.
        BundleError: the bundle fails verification.
    """
    from edgead.bundle import read_bundle

    options.validate()
    store = ResultStore(out)
    verified = read_bundle(bundle, trusted_keys=options.trusted_keys)
    check_image_bundle(verified.manifest.modality, bundle)
    paths = list_inputs(data)
    done = store.done_paths()
    todo = [p for p in paths if p not in done]
    if len(todo) < len(paths):
        logger.info(
            "resuming %s: %d of %d inputs already scored", out, len(paths) - len(todo), len(paths)
        )
    return paths, todo, store


def run_batch(
    bundle: str | Path,
    data: str | Path,
    out: str | Path,
    options: BatchOptions = BatchOptions(),
    progress: Progress = _no_progress,
) -> BatchSummary:
    """Score every image named by `data` with `bundle` in this process; write `out` (Parquet).

    Args:
        bundle: `.edgead` image bundle.
        data: see `list_inputs`.
        out: results Parquet file (see `result_schema`); an existing one is resumed.
        options: BatchOptions.
        progress: called as progress(done, total, "scored") after each part file.
    """
    start = time.perf_counter()
    paths, todo, store = plan_batch(bundle, data, out, options)
    writer = PartWriter(store, options, len(todo), progress)
    if todo:
        scorer = BatchScorer(bundle, options)
        try:
            for batch in iter_path_tables(todo, options.batch_size):
                writer.add(scorer(batch))
        finally:
            writer.flush()
            scorer.close()
    merged = store.finalize()
    return BatchSummary(
        inputs=len(paths),
        skipped=len(paths) - len(todo),
        scored=writer.scored,
        failed=writer.failed,
        rows=merged.num_rows,
        seconds=time.perf_counter() - start,
        engine="one process",
        first_result_s=_since(start, writer.first_result_at),
    )


def _since(start: float, moment: float | None) -> float | None:
    """Seconds from `start` to `moment` (perf_counter values), None when there is none."""
    return None if moment is None else moment - start


def iter_path_tables(paths: Sequence[str], rows: int) -> list[pa.Table]:
    """`paths` as consecutive Arrow tables of at most `rows` rows, each with a `path` column."""
    pa = require_module("pyarrow", "edgead batch")
    return [pa.table({"path": list(paths[i : i + rows])}) for i in range(0, len(paths), rows)]
