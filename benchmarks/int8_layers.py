"""Where an int8 graph leaves fp32, layer by layer: ONNX Runtime QDQ and OpenVINO, per tensor.

Takes an fp32 bundle with an image graph (model.onnx), quantizes it exactly as `edgead export
--precision int8` does (`edgead.export.quantize.quantize_onnx_int8`, calibrated on
--calibration images resized as the runtime resizes), adds every intermediate tensor of the
embedder that both graphs hold as a graph output, and runs --test images through

- fp32 on ONNX Runtime (the reference),
- the int8 graph on ONNX Runtime with graph optimisations off (the QDQ arithmetic as written),
- the int8 graph on OpenVINO, INFERENCE_PRECISION_HINT f32 (its int8 execution),

then prints per tensor the SQNR (dB) and correlation of each against fp32. `--old` quantizes as
the first pass did (Conv + MatMul only, no pool rewrite) to show the faults it had. One JSON
file goes to benchmarks/results/.

    .venv/bin/python benchmarks/int8_layers.py --bundle mpdd_graph.edgead \
        --calibration ../shared/datasets/mpdd_metal_plate/train/good \
        --test ../shared/datasets/mpdd_metal_plate/test/defective
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
#: Op types whose outputs are compared (activations, residual sums, the feature tail).
COMPARED = ("Conv", "Clip", "Add", "AveragePool", "Resize", "Concat", "Transpose")


def _with_outputs(model: bytes, names: list[str]) -> bytes:
    import onnx

    proto = onnx.load_from_string(model)
    have = {o.name for o in proto.graph.output}
    proto.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in have)
    return proto.SerializeToString()


def _ort(model: bytes, names: list[str], x: np.ndarray, optimise: bool) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    if not optimise:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(
        _with_outputs(model, names), opts, providers=["CPUExecutionProvider"]
    )
    runs = [sess.run(names, {"images": x[i : i + 1]}) for i in range(len(x))]
    return {n: np.concatenate([r[k] for r in runs]) for k, n in enumerate(names)}


def _openvino(model: bytes, names: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(model=_with_outputs(model, names), weights=None),
        "CPU",
        {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1},
    )
    request = compiled.create_infer_request()
    out: dict[str, list[np.ndarray]] = {}
    for i in range(len(x)):
        res = request.infer({0: x[i : i + 1]})
        for port in compiled.outputs:
            for name in port.get_names():
                out.setdefault(name, []).append(np.array(res[port], dtype=np.float32))
    return {n: np.concatenate(v) for n, v in out.items() if n in names}


def _quantize(fp32: bytes, calibration: np.ndarray, old: bool) -> bytes:
    import edgead.export.quantize as quantize

    if not old:
        return quantize.quantize_onnx_int8(fp32, calibration, "images", "all")
    saved = (
        quantize.SCOPE_OPS["all"],
        quantize.pools_as_convs,
        quantize.input_nodes,
        quantize.affine_input_as_conv,
    )
    quantize.SCOPE_OPS["all"] = ["Conv", "MatMul"]
    quantize.pools_as_convs = lambda model: (model, [])  # type: ignore[assignment]
    quantize.input_nodes = lambda model: []  # type: ignore[assignment]
    quantize.affine_input_as_conv = lambda model: (model, [])  # type: ignore[assignment]
    try:
        return quantize.quantize_onnx_int8(fp32, calibration, "images", "all")
    finally:
        (
            quantize.SCOPE_OPS["all"],
            quantize.pools_as_convs,
            quantize.input_nodes,
            quantize.affine_input_as_conv,
        ) = saved


def _stats(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    r, g = ref.astype(np.float64).ravel(), got.astype(np.float64).ravel()
    err = float(np.mean((r - g) ** 2))
    return {
        "sqnr_db": float(10 * np.log10(np.mean(r**2) / max(err, 1e-30))),
        "corr": float(np.corrcoef(r, g)[0, 1]) if r.std() > 0 and g.std() > 0 else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    """Compare every shared intermediate tensor; print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--calibration", required=True, help="folder of normal images (png)")
    parser.add_argument("--test", required=True, help="folder of test images (png)")
    parser.add_argument("--n-calibration", type=int, default=54)
    parser.add_argument("--n-test", type=int, default=8)
    parser.add_argument("--old", action="store_true", help="quantize as the first pass did")
    parser.add_argument("--results-file", default=None)
    args = parser.parse_args(argv)
    import onnx

    from edgead.bundle import read_bundle

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from precision_speed import _images  # the same image loading as the speed benchmark

    bundle = read_bundle(args.bundle)
    spec = bundle.manifest.input
    size = tuple(int(v) for v in spec.image_size)  # type: ignore[union-attr]
    calib = _images(args.calibration, size, args.n_calibration, spec.resize)  # type: ignore[arg-type,union-attr]
    test = _images(args.test, size, args.n_test, spec.resize)  # type: ignore[arg-type,union-attr]
    fp32 = bundle.member(bundle.manifest.graphs["onnx"])
    int8 = _quantize(fp32, calib, args.old)
    in_int8 = {o for n in onnx.load_from_string(int8).graph.node for o in n.output}
    names = [
        n.output[0]
        for n in onnx.load_from_string(fp32).graph.node
        if n.op_type in COMPARED and n.output[0] in in_int8
    ] + [o.name for o in onnx.load_from_string(fp32).graph.output]
    ref = _ort(fp32, names, test, optimise=True)
    qdq = _ort(int8, names, test, optimise=False)
    ov_int8 = _openvino(int8, names, test)
    rows: list[dict[str, Any]] = []
    for name in names:
        row: dict[str, Any] = {"tensor": name, "ort_qdq": _stats(ref[name], qdq[name])}
        if name in ov_int8:
            row["openvino_int8"] = _stats(ref[name], ov_int8[name])
        rows.append(row)
        ov = row.get("openvino_int8", {"sqnr_db": float("nan"), "corr": float("nan")})
        print(
            f"{name[-58:]:58s} ORT {row['ort_qdq']['sqnr_db']:6.1f} dB {row['ort_qdq']['corr']:.4f}"
            f"   OpenVINO {ov['sqnr_db']:6.1f} dB {ov['corr']:.4f}"
        )
    payload = {
        "benchmark": "int8_layers",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(),
        "bundle": args.bundle,
        "old": args.old,
        "n_calibration": len(calib),
        "n_test": len(test),
        "rows": rows,
    }
    from edgead.bench import write_report

    out = write_report(payload, args.results_file, RESULTS, "int8_layers")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
