"""Runtime latency per backend and precision: batch 1, 2 threads, one process per measurement.

For each bundle given and each backend it can run on here (ONNX Runtime CPU; OpenVINO CPU when the
bundle has IR; optionally OpenVINO with another inference-precision hint), a worker process
(`--worker`, torch-free: so peak RSS is the scoring process's alone) loads the bundle (load time),
warms up, then scores `--iters` real frames one at a time and reports p50/p95 of the end-to-end
time and of each runtime stage (preprocess, graph, search, postprocess), peak RSS (getrusage),
the machine's load average before and after. The parent prints a table and writes one JSON file
to benchmarks/results/.

    .venv/bin/python benchmarks/runtime_latency.py --bundle a224.edgead --bundle a256.edgead \
        --image ../shared/datasets/mpdd_metal_plate/test/good/000.png --threads 2

Frames: the image given (read with OpenCV, BGR, at its own resolution so resizing is timed), or
seeded noise at 512x512 px.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
SCHEMA_VERSION = 1


def _percentiles(values: list[float]) -> dict[str, float]:
    import numpy as np

    arr = np.asarray(values, dtype=np.float64)
    return {
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
        "mean": float(arr.mean()),
    }


def worker(
    bundle: str,
    backend: str,
    precision_hint: str | None,
    threads: int,
    image: str | None,
    warmup: int,
    iters: int,
    maps: bool = True,
) -> dict[str, Any]:
    """Measure one (bundle, backend) in this process; must stay torch-free."""
    import resource
    import time

    for name in ("torch", "torchvision", "sklearn"):
        sys.modules[name] = None  # type: ignore[assignment]
    rss_start_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    import cv2
    import numpy as np

    from edgead.runtime import Detector

    t0 = time.perf_counter()
    if precision_hint is None:
        det = Detector.load(bundle, device="cpu", backend=backend, threads=threads)
    else:  # OpenVINO with another INFERENCE_PRECISION_HINT (e.g. the plugin's bf16 default)
        from edgead.bundle import read_bundle
        from edgead.runtime.backends.openvino import OpenVinoBackend
        from edgead.runtime.detector import _set_search_threads

        verified = read_bundle(bundle)
        _set_search_threads(threads)
        engine = OpenVinoBackend(
            verified.member("model.xml"),
            verified.member("model.bin"),
            device="CPU",
            precision=precision_hint,
            threads=threads,
        )
        det = Detector(verified, engine)
    load_ms = (time.perf_counter() - t0) * 1e3
    if image:
        frame = cv2.imread(image, cv2.IMREAD_COLOR)
        if frame is None:
            raise SystemExit(f"cannot read image {image}")
    else:
        frame = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    for _ in range(warmup):
        det(frame, maps=maps)
    total: list[float] = []
    stages: dict[str, list[float]] = {}
    cpu_start = time.process_time()
    for _ in range(iters):
        t1 = time.perf_counter()
        res = det(frame, maps=maps)
        total.append((time.perf_counter() - t1) * 1e3)
        for key, value in res.timings_ms.items():  # type: ignore[union-attr]
            stages.setdefault(key, []).append(value)
    # CPU seconds this process used per frame (all its threads): on a machine shared with other
    # jobs this is steadier than wall time; idle wall time lies between cpu/threads and cpu.
    cpu_ms_per_frame = (time.process_time() - cpu_start) * 1e3 / iters
    out = {
        "bundle": bundle,
        "cpu_ms_per_frame": cpu_ms_per_frame,
        "backend": det.backend,
        "backend_info": det.backend_info,
        "fallbacks": det.fallbacks,
        "precision": det.manifest.precision,
        "precision_hint_requested": precision_hint
        or det.backend_info.get("precision_hint_requested"),
        "precision_hint": det.backend_info.get("precision_hint_used"),  # what the plugin runs
        "size_px": list(det.image_size),
        "threads": threads,
        "batch": 1,
        "maps": maps,
        "iters": iters,
        "frame_hw": list(frame.shape[:2]),
        "load_ms": load_ms,
        "latency_ms": _percentiles(total),
        "stages_ms": {k: _percentiles(v) for k, v in stages.items()},
        "rss_mb_before_load": rss_start_mb,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_loaded": sys.modules.get("torch") is not None,
        "index": None
        if det.manifest.index is None
        else {
            "factory": det.manifest.index.factory,
            "n_vectors": det.manifest.index.n_vectors,
            "dim": det.manifest.index.dim,
        },
    }
    det.close()
    return out


def _run_worker(
    args: argparse.Namespace, bundle: str, backend: str, hint: str | None
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--bundle",
        bundle,
        "--backend",
        backend,
        "--threads",
        str(args.threads),
        "--warmup",
        str(args.warmup),
        "--iters",
        str(args.iters),
    ]
    if hint:
        cmd += ["--precision-hint", hint]
    if args.image:
        cmd += ["--image", args.image]
    if args.no_maps:
        cmd += ["--no-maps"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    if args.omp_wait_policy:  # faiss's OpenMP workers: PASSIVE stops them spinning after a search
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    load_before = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        return {"bundle": bundle, "backend": backend, "error": proc.stderr.strip()[-2000:]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["loadavg_1m"] = [load_before, os.getloadavg()[0]]
    return result


def main(argv: list[str] | None = None) -> int:
    """Measure every bundle on every backend it supports here; print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", action="append", required=True, help="a .edgead file (repeat)")
    parser.add_argument("--image", help="frame to score (default: 512x512 noise)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--backend", default=None, help="only this backend (worker: required)")
    parser.add_argument(
        "--precision-hint",
        default=None,
        help="also measure OpenVINO with this hint (e.g. bf16); worker: use it",
    )
    parser.add_argument("--results-file", default=None)
    parser.add_argument(
        "--omp-wait-policy",
        default="PASSIVE",
        help="OMP_WAIT_POLICY for the workers ('' keeps the environment's)",
    )
    parser.add_argument(
        "--no-maps",
        action="store_true",
        help="score with Detector(frame, maps=False): decision only, no anomaly map",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(
            json.dumps(
                worker(
                    args.bundle[0],
                    args.backend,
                    args.precision_hint,
                    args.threads,
                    args.image,
                    args.warmup,
                    args.iters,
                    maps=not args.no_maps,
                )
            )
        )
        return 0
    import hashlib

    from edgead import __version__
    from edgead.bench import git_sha
    from edgead.bundle import read_bundle

    rows = []
    for bundle in args.bundle:
        manifest = read_bundle(bundle).manifest
        plans: list[tuple[str, str | None]] = [("onnxruntime", None)]
        if "openvino" in manifest.graphs:
            plans.append(("openvino", None))
            if args.precision_hint:
                plans.append(("openvino", args.precision_hint))
        if args.backend:
            plans = [p for p in plans if p[0] == args.backend]
        for backend, hint in plans:
            row = _run_worker(args, bundle, backend, hint)
            row["bundle_mb"] = Path(bundle).stat().st_size / 1e6
            row["bundle_sha256"] = hashlib.sha256(Path(bundle).read_bytes()).hexdigest()
            rows.append(row)
            _print_row(row)
    import onnxruntime
    import openvino

    payload = {
        "schema_version": SCHEMA_VERSION,
        "edgead_version": __version__,
        "git_sha": git_sha(RESULTS.parent),
        "benchmark": "runtime_latency",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(),
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "omp_wait_policy": args.omp_wait_policy or os.environ.get("OMP_WAIT_POLICY"),
        "versions": {"onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__},
        "results": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = (
        Path(args.results_file)
        if args.results_file
        else RESULTS / f"runtime_latency_{dt.datetime.now():%Y%m%d_%H%M%S}.json"
    )
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def _print_row(row: dict[str, Any]) -> None:
    if "error" in row:
        print(f"{row['bundle']} {row['backend']}: ERROR {row['error'][-300:]}")
        return
    st = row["stages_ms"]
    print(
        f"{Path(row['bundle']).name:28s} {row['backend']:34s} {row['precision']}/"
        f"{row['precision_hint'] or '-':5s} {row['size_px'][0]:4d}px "
        f"e2e p50 {row['latency_ms']['p50']:6.2f} p95 {row['latency_ms']['p95']:6.2f} | "
        + " ".join(
            f"{k[:4]} {st[k]['p50']:.2f}/{st[k]['p95']:.2f}"
            for k in ("preprocess", "graph", "search", "postprocess")
        )
        + f" | cpu {row['cpu_ms_per_frame']:.1f} ms/frame"
        + f" | load {row['load_ms']:.0f} ms, peak RSS {row['peak_rss_mb']:.0f} MiB, "
        f"bundle {row['bundle_mb']:.1f} MB, load avg {row['loadavg_1m'][0]:.1f}"
    )


if __name__ == "__main__":
    sys.exit(main())
