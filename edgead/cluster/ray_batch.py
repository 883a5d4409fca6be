"""`edgead batch --ray`: the same `BatchScorer` as a Ray Data actor pool. Imports Ray.

    driver: list inputs, skip done paths -> Ray Data blocks of paths
        -> map_batches(BatchScorer, actor pool of `workers`, one Detector per actor)
        -> iter_batches on the driver -> PartWriter (part files) -> ResultStore.finalize

Ray Data restarts a dead actor and retries its batch elsewhere (actors get `max_restarts=-1`,
`max_task_retries=-1`), and a batch's rows reach the driver only once it completed, so a worker
(or node) lost mid-job costs time, not rows; `PartWriter` also drops any repeated path.
Paths, the bundle and `--save-maps` must be readable/writable at the same place on every node.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgead.cluster import require_module
from edgead.cluster.batch import (
    BatchOptions,
    BatchScorer,
    BatchSummary,
    PartWriter,
    Progress,
    _no_progress,
    _since,
    iter_path_tables,
    plan_batch,
)
from edgead.errors import BackendUnavailableError, ConfigError

logger = logging.getLogger(__name__)


@contextmanager
def ray_connection(address: str) -> Iterator[Any]:
    """Connect to a Ray cluster (`address` "host:port" or "auto") or start one here ("local").

    Disconnects on exit when this call connected (a caller's existing connection is kept).
    Usage statistics are off and, for "local", the dashboard is not started.
    """
    ray = require_module("ray", "--ray")
    if ray.is_initialized():
        yield ray
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address == "local":
        kwargs["include_dashboard"] = False
    else:
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise BackendUnavailableError(
            f"--ray {address}: cannot connect to a Ray cluster ({exc}); start one with "
            "`ray start --head` and pass its address (host:port), or use --ray local"
        ) from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def _rows_per_block(n: int, workers: int, batch_size: int) -> int:
    """Rows per Ray Data block: about 8 blocks per worker, whole batches, at most 64 batches."""
    per_block = math.ceil(n / (workers * 8) / batch_size) * batch_size
    return max(batch_size, min(per_block, batch_size * 64))


def run_batch_ray(
    bundle: str | Path,
    data: str | Path,
    out: str | Path,
    options: BatchOptions,
    *,
    address: str = "local",
    workers: int = 2,
    progress: Progress = _no_progress,
    scorer_cls: type[BatchScorer] = BatchScorer,
) -> BatchSummary:
    """Score every image named by `data` on a Ray cluster; same output as `batch.run_batch`.

    Args:
        bundle, data, out, options: as for `edgead.cluster.batch.run_batch`. Each actor loads
            the bundle with `options.threads` threads (1 when None) and asks Ray for as many CPUs.
        address: "local" (start Ray in this process), "auto" or "host:port" of a running head.
        workers: actors in the pool (each holds one Detector).
        progress: called as progress(done, total, "scored") after each part file.
        scorer_cls: the actor class, BatchScorer or a subclass importable on every node (e.g.
            one that reads paths from object storage).
    """
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    start = time.perf_counter()
    paths, todo, store = plan_batch(bundle, data, out, options)
    threads = options.threads or 1
    actor_options = BatchOptions(**{**options.__dict__, "threads": threads})
    writer = PartWriter(store, options, len(todo), progress)
    if todo:
        with ray_connection(address) as ray:
            # our own progress callback reports; Ray Data's progress log lines would repeat it
            ray.data.DataContext.get_current().enable_progress_bars = False
            blocks = iter_path_tables(todo, _rows_per_block(len(todo), workers, options.batch_size))
            dataset = ray.data.from_arrow(blocks).map_batches(
                scorer_cls,
                fn_constructor_kwargs={"bundle": str(bundle), "options": actor_options},
                batch_size=options.batch_size,
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=workers),
                num_cpus=threads,
            )
            logger.info(
                "scoring %d images on Ray (%s) with %d actor(s), %d thread(s) each",
                len(todo),
                address,
                workers,
                threads,
            )
            try:
                for table in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                    writer.add(table)
            finally:
                writer.flush()
    merged = store.finalize()
    return BatchSummary(
        inputs=len(paths),
        skipped=len(paths) - len(todo),
        scored=writer.scored,
        failed=writer.failed,
        rows=merged.num_rows,
        seconds=time.perf_counter() - start,
        engine=f"ray ({address}, {workers} worker(s))",
        first_result_s=_since(start, writer.first_result_at),
    )
