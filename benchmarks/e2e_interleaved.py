"""End-to-end latency of several bundles / settings, interleaved in one process.

`runtime_latency.py` measures one bundle per worker process, one after the other, so on a machine
shared with other jobs a load change between rows shows up as a speed difference. Here every
variant (bundle x backend x maps on/off x OpenVINO CPU settings) is loaded into one process and
round r times each variant on `--per-round` frames, so load changes hit all variants alike. Per
variant: p50 of the end-to-end wall time per frame, p50 of each runtime stage (preprocess,
graph, search, postprocess), the process CPU ms per frame (all threads), and the load average
before and after. One JSON file goes to benchmarks/results/.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/e2e_interleaved.py \
        --bundle auto.edgead --bundle int8.edgead --backend openvino --threads 2 \
        --image ../shared/datasets/mpdd_metal_plate/test/defective/000.png \
        --ov-config pinned:ENABLE_CPU_PINNING=YES --rounds 20 --per-round 5

`--ov-config NAME:KEY=VALUE[,KEY=VALUE]` adds, for every OpenVINO variant, one compiled with
these CPU properties on top of the runtime's own (PERFORMANCE_HINT LATENCY, the precision hint,
INFERENCE_NUM_THREADS).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def _recompiled(det: Any, extra: dict[str, str]) -> None:
    """Recompile `det`'s OpenVINO model with `extra` CPU properties added (benchmark only)."""
    engine = det._engine()
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", **extra}
    config["INFERENCE_PRECISION_HINT"] = engine.info["precision_hint_requested"]
    if engine.info.get("threads") is not None:
        config["INFERENCE_NUM_THREADS"] = int(engine.info["threads"])
    bundle = det._bundle
    import openvino as ov

    xml = bundle.member(det.manifest.graphs["openvino"])
    weights = bundle.member(det.manifest.graphs["openvino"][: -len(".xml")] + ".bin")
    source = engine._core.read_model(model=xml, weights=ov.Tensor(np.frombuffer(weights, np.uint8)))
    engine._compiled = engine._core.compile_model(source, "CPU", config)
    engine._request = engine._compiled.create_infer_request()
    engine.info["extra_config"] = extra


def _variants(args: argparse.Namespace) -> dict[str, tuple[Any, bool]]:
    """{label: (Detector, maps)} for every bundle x backend x maps x OpenVINO config."""
    from edgead.runtime import Detector

    extras: dict[str, dict[str, str]] = {"": {}}
    for spec in args.ov_config:
        name, _, pairs = spec.partition(":")
        extras[name] = dict(p.split("=", 1) for p in pairs.split(",") if p)
    out: dict[str, tuple[Any, bool]] = {}
    for bundle in args.bundle:
        for backend in args.backend:
            for extra_name, extra in extras.items():
                if extra and backend != "openvino":
                    continue
                det = Detector.load(bundle, device="cpu", backend=backend, threads=args.threads)
                if extra:
                    _recompiled(det, extra)
                for maps in (True, False) if args.both_maps else (not args.no_maps,):
                    label = f"{Path(bundle).stem} {backend}{' ' + extra_name if extra_name else ''}"
                    out[label + ("" if maps else " no-maps")] = (det, maps)
    return out


def main(argv: list[str] | None = None) -> int:
    """Time every variant interleaved; print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", action="append", required=True)
    parser.add_argument("--backend", action="append", default=None, help="repeat; default ORT")
    parser.add_argument("--image", required=True, help="frame to score (read BGR, own size)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--no-maps", action="store_true", help="only maps=False")
    parser.add_argument("--both-maps", action="store_true", help="maps on and off")
    parser.add_argument("--ov-config", action="append", default=[], help="NAME:KEY=VAL,...")
    parser.add_argument("--results-file", default=None)
    args = parser.parse_args(argv)
    args.backend = args.backend or ["onnxruntime"]
    import cv2

    frame = cv2.imread(args.image, cv2.IMREAD_COLOR)
    if frame is None:
        raise SystemExit(f"cannot read {args.image}")
    variants = _variants(args)
    for det, maps in variants.values():
        for _ in range(args.warmup):
            det(frame, maps=maps)
    wall: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    stages: dict[str, dict[str, list[float]]] = {k: {} for k in variants}
    load = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        for label, (det, maps) in variants.items():
            c0 = time.process_time()
            for _ in range(args.per_round):
                t0 = time.perf_counter()
                res = det(frame, maps=maps)
                wall[label].append((time.perf_counter() - t0) * 1e3)
                for key, value in res.timings_ms.items():
                    stages[label].setdefault(key, []).append(value)
            cpu[label].append((time.process_time() - c0) * 1e3 / args.per_round)
    load.append(os.getloadavg()[0])
    rows: dict[str, dict[str, Any]] = {}
    for label, (det, maps) in variants.items():
        rows[label] = {
            "p50_ms": float(np.median(wall[label])),
            "p95_ms": float(np.percentile(wall[label], 95)),
            "cpu_ms_per_frame": float(np.median(cpu[label])),
            "stages_p50_ms": {k: float(np.median(v)) for k, v in stages[label].items()},
            "backend": det.backend,
            "backend_info": {k: str(v) for k, v in det.backend_info.items()},
            "precision": det.manifest.precision,
            "maps": maps,
        }
        st, row = rows[label]["stages_p50_ms"], rows[label]
        print(
            f"{label:48s} p50 {row['p50_ms']:6.2f} ms  cpu {row['cpu_ms_per_frame']:6.2f}"
            f"  pre {st['preprocess']:5.2f}  graph {st['graph']:5.2f}  search {st['search']:5.2f}"
            f"  post {st['postprocess']:5.2f}"
        )
    from edgead.bench import git_sha, write_report

    payload = {
        "benchmark": "e2e_interleaved",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(),
        "git_sha": git_sha(RESULTS.parent),
        "image": args.image,
        "frame_hw": list(frame.shape[:2]),
        "threads": args.threads,
        "rounds": args.rounds,
        "per_round": args.per_round,
        "loadavg_1m": load,
        "results": rows,
    }
    out = write_report(payload, args.results_file, RESULTS, "e2e_interleaved")
    print(f"wrote {out} (load average {load[0]:.1f} -> {load[1]:.1f})")
    for det, _ in variants.values():
        det.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
