"""Batch scoring throughput: one process vs Ray Data with 1 and 2 workers, on MPDD and a 10,000
image synthetic archive; result identity with `edgead predict`, one row per input after a kill.

    .venv/bin/python benchmarks/batch_scale.py --bundle mpdd.edgead \
        --data ../shared/datasets/mpdd_metal_plate/test --archive-size 10000

Steps (one machine, Ray started in this process with `--cpus` CPUs, dashboard off):
1. reference: `edgead predict BUNDLE DATA --json` (a subprocess, the CLI as users run it);
2. on DATA: one process with 1 and with `--threads` threads, Ray with 1 and 2 workers (1 thread
   each), and Ray with 2 workers where one worker process is SIGKILLed after a third of the rows;
3. on the archive (hard links to DATA's images under a temp folder, `--archive-size` files in
   40 "station" folders; removed at the end): one process (`--threads`), Ray with 2 workers, and
   Ray with 2 workers and a worker killed mid-job (`--archive-ray1` adds Ray with 1 worker).
Each run writes a fresh results file and is checked: every input has exactly one row, and every
score equals the predict score of the source image bit for bit. images/s counts a run's wall
time from the call to the merged results file, model loading and actor start-up included (Ray's
own start-up is reported apart: a cluster is already up when a job is submitted to it).
Overhead per image = (Ray 1 worker - one process 1 thread) wall time / images.
Floors (the issue): identical scores, one row per input after the kill, Ray 2 workers >= 0.8x
the one-process throughput. Prints a table; writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SCHEMA_VERSION = 1


def predict_reference(bundle: Path, data: Path) -> dict[str, float]:
    """{absolute path: raw score} from `edgead predict --json` run as a subprocess."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgead.cli.main",
            "-q",
            "predict",
            str(bundle),
            str(data),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    items = json.loads(proc.stdout)["results"]
    return {os.path.abspath(i["item"]): float(i["raw_score"]) for i in items}


def make_archive(sources: list[str], size: int, root: Path) -> dict[str, str]:
    """`size` hard links (copies when linking fails) to `sources` in 40 station folders under
    `root`; {archive path: source path}."""
    mapping: dict[str, str] = {}
    for i in range(size):
        source = sources[i % len(sources)]
        target = root / f"station{i % 40:02d}" / f"img_{i:06d}{Path(source).suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        mapping[str(target)] = source
    return mapping


def _kill_one_actor(done: int, total: int, state: dict[str, Any]) -> None:
    """SIGKILL one Ray Data actor process of this driver once a third of the rows are in."""
    import psutil

    if state.get("killed") or done < total // 3 or done >= total:  # mid-job only
        return
    for proc in psutil.Process().children(recursive=True):
        try:
            if "MapWorker" in " ".join(proc.cmdline()):
                proc.kill()
                state["killed"] = {"pid": proc.pid, "at_rows": done, "of": total}
                return
        except psutil.Error:
            continue


def check(out: Path, expected: dict[str, float]) -> dict[str, Any]:
    """Rows per input and score identity of a results file against `expected` scores."""
    import numpy as np
    import pyarrow.parquet as pq

    table = pq.read_table(out, columns=["path", "raw_score", "error"]).to_pandas()
    counts = table["path"].value_counts()
    got = table.set_index("path")["raw_score"]
    common = [p for p in expected if p in got.index]
    diff = np.abs(got.loc[common].to_numpy() - np.array([expected[p] for p in common]))
    return {
        "rows": len(table),
        "inputs": len(expected),
        "one_row_per_input": bool(
            len(table) == len(expected) and set(counts.index) == set(expected) and counts.max() == 1
        ),
        "errors": int(table["error"].notna().sum()),
        "identical_scores": bool(len(common) == len(expected) and (diff == 0).all()),
        "max_abs_diff": float(diff.max()) if len(diff) else None,
    }


def run_one(
    name: str,
    bundle: Path,
    data: Path,
    expected: dict[str, float],
    work: Path,
    *,
    ray_workers: int | None,
    threads: int,
    batch_size: int,
    kill: bool = False,
) -> dict[str, Any]:
    """One timed batch job into a fresh results file, then its checks."""
    from edgead.cluster.batch import BatchOptions, run_batch
    from edgead.cluster.ray_batch import run_batch_ray

    out = work / f"{name}.parquet"
    state: dict[str, Any] = {}
    flush_rows = batch_size if kill else 1024  # a kill run reports after every batch
    options = BatchOptions(
        batch_size=batch_size, device="cpu", threads=threads, flush_rows=flush_rows
    )
    start = time.perf_counter()
    if ray_workers is None:
        summary = run_batch(bundle, data, out, options)
    else:

        def progress(done: int, total: int, description: str) -> None:
            if kill:
                _kill_one_actor(done, total, state)

        summary = run_batch_ray(
            bundle, data, out, options, address="auto", workers=ray_workers, progress=progress
        )
    wall_s = time.perf_counter() - start
    result = {
        "name": name,
        "engine": summary.engine,
        "workers": ray_workers,
        "threads_per_worker": threads,
        "images": summary.scored + summary.failed,
        "wall_s": round(wall_s, 3),
        "images_per_s": round((summary.scored + summary.failed) / wall_s, 3),
        "first_result_s": None
        if summary.first_result_s is None
        else round(summary.first_result_s, 3),
        "killed": state.get("killed"),
        **check(out, expected),
    }
    if kill and not state.get("killed"):
        result["kill_missed"] = True
    out.unlink()
    print(
        f"  {name:<28} {result['images']:>6} img {result['wall_s']:>8.1f} s "
        f"{result['images_per_s']:>7.2f} img/s  one row/input {result['one_row_per_input']}  "
        f"identical {result['identical_scores']}" + ("  (worker killed)" if kill else ""),
        flush=True,
    )
    return result


class _Runs:
    """Collects run results into report["runs"] and rewrites the JSON after each one (a long
    benchmark stopped early still leaves its finished runs)."""

    def __init__(self, report: dict[str, Any], path: Path) -> None:
        self.report, self.path = report, path

    def append(self, result: dict[str, Any]) -> None:
        from edgead.bench import write_report

        self.report["runs"][result["name"]] = result
        write_report(self.report, self.path, RESULTS, "batch_scale")


def _load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def resummarize(path: Path, threads: int = 2) -> dict[str, Any]:
    """Recompute the summary of a written report (e.g. one stopped early); prints and returns it."""
    report = json.loads(Path(path).read_text())
    summary = _summary(report["runs"], threads)
    for key, value in summary.items():
        print(f"{key}: {value}")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument(
        "--data", type=Path, default=REPO.parent / "shared/datasets/mpdd_metal_plate/test"
    )
    parser.add_argument("--archive-size", type=int, default=10_000, help="0 skips the archive")
    parser.add_argument("--archive-ray1", action="store_true", help="also Ray 1 worker on it")
    parser.add_argument("--threads", type=int, default=2, help="threads of the one-process run")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs given to the local Ray")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--results-file", default=None)
    args = parser.parse_args(argv)

    import ray

    from edgead.bench import _versions, git_sha, report_path, write_report
    from edgead.cluster.batch import list_inputs

    bundle, data = args.bundle.resolve(), args.data.resolve()
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "benchmark": "batch_scale",
        "git_sha": git_sha(REPO),
        "bundle": str(bundle),
        "data": str(data),
        "cpu_count": os.cpu_count(),
        "load_average_start": _load_average(),
        "versions": {**_versions(), "ray": ray.__version__},
        "runs": {},
    }
    print(f"reference: edgead predict {bundle.name} {data}", flush=True)
    reference = predict_reference(bundle, data)
    assert sorted(reference) == list_inputs(data), "predict and batch list different inputs"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    t0 = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    report["ray_start_s"] = round(time.perf_counter() - t0, 3)
    work = Path(tempfile.mkdtemp(prefix="edgead-batch-scale-"))
    try:
        bs = args.batch_size
        runs = _Runs(report, report_path(args.results_file, RESULTS, "batch_scale"))
        print(f"MPDD test ({len(reference)} images), Ray start-up {report['ray_start_s']} s")
        for name, workers, threads, kill in (
            ("mpdd/one-process-1t", None, 1, False),
            (f"mpdd/one-process-{args.threads}t", None, args.threads, False),
            ("mpdd/ray-1-worker", 1, 1, False),
            ("mpdd/ray-2-workers", 2, 1, False),
            ("mpdd/ray-2-workers-kill", 2, 1, True),
        ):
            runs.append(
                run_one(
                    name,
                    bundle,
                    data,
                    reference,
                    work,
                    ray_workers=workers,
                    threads=threads,
                    batch_size=bs,
                    kill=kill,
                )
            )
        if args.archive_size > 0:
            archive = work / "archive"
            mapping = make_archive(sorted(reference), args.archive_size, archive)
            expected = {p: reference[s] for p, s in mapping.items()}
            print(f"archive ({len(expected)} images, hard links under {archive})", flush=True)
            plan = [
                (f"archive/one-process-{args.threads}t", None, args.threads, False),
                ("archive/ray-2-workers", 2, 1, False),
                ("archive/ray-2-workers-kill", 2, 1, True),
            ]
            if args.archive_ray1:
                plan.insert(1, ("archive/ray-1-worker", 1, 1, False))
            for name, workers, threads, kill in plan:
                runs.append(
                    run_one(
                        name,
                        bundle,
                        archive,
                        expected,
                        work,
                        ray_workers=workers,
                        threads=threads,
                        batch_size=bs,
                        kill=kill,
                    )
                )
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    report["load_average_end"] = _load_average()
    report["summary"] = _summary(report["runs"], args.threads)
    for key, value in report["summary"].items():
        print(f"{key}: {value}")
    out = write_report(report, runs.path, RESULTS, "batch_scale")
    print(f"wrote {out}")
    return 0 if all(v for k, v in report["summary"].items() if k.startswith("floor_")) else 1


def _summary(runs: dict[str, dict[str, Any]], threads: int) -> dict[str, Any]:
    """Overhead per image and the issue's floors from the runs."""
    out: dict[str, Any] = {}
    one, ray1 = runs.get("mpdd/one-process-1t"), runs.get("mpdd/ray-1-worker")
    if one and ray1:
        out["ray_overhead_ms_per_image"] = round(
            (ray1["wall_s"] - one["wall_s"]) / one["images"] * 1e3, 2
        )
        if one["first_result_s"] is not None and ray1["first_result_s"] is not None:
            # split into a fixed start-up (actor + model load until the first batch is back)
            # and what remains per image once the pool runs
            out["ray_startup_extra_s"] = round(ray1["first_result_s"] - one["first_result_s"], 3)
            steady_ray = ray1["wall_s"] - ray1["first_result_s"]
            steady_one = one["wall_s"] - one["first_result_s"]
            out["ray_steady_overhead_ms_per_image"] = round(
                (steady_ray - steady_one) / one["images"] * 1e3, 2
            )
    for prefix in ("mpdd", "archive"):
        single, ray2 = (
            runs.get(f"{prefix}/one-process-{threads}t"),
            runs.get(f"{prefix}/ray-2-workers"),
        )
        if single and ray2:
            ratio = ray2["images_per_s"] / single["images_per_s"]
            out[f"{prefix}_ray2_vs_one_process"] = round(ratio, 3)
            out[f"floor_{prefix}_ray2_at_least_0.8x"] = ratio >= 0.8
    mine = [r for r in runs.values()]
    out["floor_identical_scores"] = all(r["identical_scores"] for r in mine)
    out["floor_one_row_per_input_after_kill"] = all(
        r["one_row_per_input"] and r["killed"] for r in mine if r["name"].endswith("-kill")
    )
    return out


if __name__ == "__main__":
    sys.exit(main())
