"""Graph speed and output fidelity per precision: fp32 / bf16 / int8 on ONNX Runtime and OpenVINO.

Takes an fp32 bundle exported with `--target openvino` (usually `--index graph`, so the graph
holds the search), makes the int8 graphs exactly as `edgead export --precision int8` does
(`edgead.export.quantize`: ONNX Runtime static QDQ and NNCF post-training quantization, both
calibrated on --calibration images, the in-graph search kept float), then times every variant
interleaved (each round runs every variant once; batch 1, --threads threads) on --test images and
reports p50 wall ms, CPU ms per frame (steadier on a shared machine), the speed-up over fp32 on
the same backend, and how well each variant's outputs follow fp32 (correlation, max rel error).
AUROC is measured by the exporter itself (`export["precision"]`), not here.

    .venv/bin/python benchmarks/precision_speed.py --bundle mpdd_graph.edgead \
        --calibration ../shared/datasets/mpdd_metal_plate/train/good \
        --test ../shared/datasets/mpdd_metal_plate/test/defective --threads 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def _images(folder: str, size: tuple[int, int], n: int, resize: str) -> np.ndarray:
    """uint8 (n, H, W, 3) RGB: the first n PNGs of `folder`, resized as the runtime does."""
    import cv2

    from edgead.ops.image import resize_frame

    files = sorted(Path(folder).glob("*.png"))[:n]
    return np.stack([resize_frame(cv2.imread(str(f)), size, resize, "BGR") for f in files])


def _variants(bundle: Any, calib: np.ndarray, threads: int) -> dict[str, Callable[..., Any]]:
    import onnxruntime as ort
    import openvino as ov

    from edgead.export.quantize import int8_openvino_ir, quantize_onnx_int8, quantize_openvino_int8

    onnx_fp32 = bundle.member("model.onnx")
    xml, weights = bundle.member("model.xml"), bundle.member("model.bin")
    onnx_int8 = quantize_onnx_int8(onnx_fp32, calib, "images", "all")
    xml8, weights8, keep_float = int8_openvino_ir(onnx_fp32)
    xml8, weights8, _ = quantize_openvino_int8(xml8, weights8, calib, "all", keep_float=keep_float)

    def ort_fn(model: bytes) -> Callable[[np.ndarray], np.ndarray]:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        return lambda x: sess.run(None, {"images": x})[0]

    core = ov.Core()

    def ov_fn(x_: bytes, w_: bytes, hint: str) -> Callable[[np.ndarray], np.ndarray]:
        model = core.read_model(model=x_, weights=ov.Tensor(np.frombuffer(w_, np.uint8)))
        config = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": hint,
            "INFERENCE_NUM_THREADS": threads,
        }
        request = core.compile_model(model, "CPU", config).create_infer_request()

        def run(x: np.ndarray) -> np.ndarray:
            request.infer({0: x})
            return np.array(request.get_output_tensor(0).data, copy=True)

        return run

    return {
        "ORT fp32": ort_fn(onnx_fp32),
        "ORT int8 (QDQ)": ort_fn(onnx_int8),
        "OpenVINO f32": ov_fn(xml, weights, "f32"),
        "OpenVINO bf16": ov_fn(xml, weights, "bf16"),
        "OpenVINO int8 (NNCF)": ov_fn(xml8, weights8, "f32"),
        "OpenVINO int8 (NNCF) bf16 hint": ov_fn(xml8, weights8, "bf16"),
        "OpenVINO int8 (ORT's QDQ graph)": ov_fn(onnx_int8, b"", "f32"),
    }


def main(argv: list[str] | None = None) -> int:
    """Time and compare every variant; print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--calibration", required=True, help="folder of normal images")
    parser.add_argument("--test", required=True, help="folder of test images")
    parser.add_argument("--n-calibration", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--per-round", type=int, default=4)
    parser.add_argument("--results-file", default=None)
    args = parser.parse_args(argv)
    from edgead.bundle import read_bundle

    bundle = read_bundle(args.bundle)
    size = tuple(int(v) for v in bundle.manifest.input.image_size)  # type: ignore[union-attr]
    resize = bundle.manifest.input.resize  # type: ignore[union-attr]
    calib = _images(args.calibration, size, args.n_calibration, resize)  # type: ignore[arg-type]
    test = _images(args.test, size, 8, resize)  # type: ignore[arg-type]
    variants = _variants(bundle, calib, args.threads)
    reference = {"ORT": variants["ORT fp32"], "OpenVINO": variants["OpenVINO f32"]}
    rows: dict[str, dict[str, Any]] = {}
    for name, fn in variants.items():
        ref = reference[name.split()[0]]
        want = np.concatenate([ref(test[i : i + 1]) for i in range(len(test))]).ravel()
        got = np.concatenate([fn(test[i : i + 1]) for i in range(len(test))]).ravel()
        rows[name] = {
            "corr_with_fp32": float(np.corrcoef(want, got)[0, 1]),
            "max_rel_err": float(np.abs(got - want).max() / np.abs(want).max()),
            "wall_ms": [],
            "cpu_ms": [],
        }
    load = [os.getloadavg()[0]]
    for r in range(args.rounds):
        for name, fn in variants.items():
            x = test[r % len(test)][None]
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.per_round):
                fn(x)
            rows[name]["wall_ms"].append((time.perf_counter() - t0) * 1e3 / args.per_round)
            rows[name]["cpu_ms"].append((time.process_time() - c0) * 1e3 / args.per_round)
    load.append(os.getloadavg()[0])
    for row in rows.values():
        row["p50_ms"] = float(np.median(row.pop("wall_ms")))
        row["cpu_ms_per_frame"] = float(np.median(row.pop("cpu_ms")))
    for name, row in rows.items():
        base = rows["ORT fp32" if name.startswith("ORT") else "OpenVINO f32"]
        row["speedup_p50"] = base["p50_ms"] / row["p50_ms"]
        row["speedup_cpu"] = base["cpu_ms_per_frame"] / row["cpu_ms_per_frame"]
        print(
            f"{name:32s} p50 {row['p50_ms']:7.2f} ms  cpu {row['cpu_ms_per_frame']:6.2f} ms  "
            f"x{row['speedup_p50']:.2f} (cpu x{row['speedup_cpu']:.2f})  corr "
            f"{row['corr_with_fp32']:.3f}  max rel err {row['max_rel_err']:.3f}"
        )
    from edgead.bench import git_sha

    payload = {
        "benchmark": "precision_speed",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(),
        "git_sha": git_sha(RESULTS.parent),
        "bundle": args.bundle,
        "threads": args.threads,
        "loadavg_1m": load,
        "results": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = (
        Path(args.results_file)
        if args.results_file
        else RESULTS / f"precision_speed_{dt.datetime.now():%Y%m%d_%H%M%S}.json"
    )
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out} (load average {load[0]:.1f} -> {load[1]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
