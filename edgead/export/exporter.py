"""One generic exporter: any registered detector's ExportSpec -> a verified `.edgead` bundle.

Flow (`export_detector`): trace the spec's module to ONNX (checked) -> OpenVINO IR when asked ->
nearest-neighbour index member when the post-processing needs one -> write a candidate bundle ->
parity: graph outputs of every backend the target uses vs torch, then per-item scores through
the real runtime (`edgead.runtime.Detector`) vs `detector.score` -> metrics through the runtime
on the run's test data when available -> the final bundle (written atomically, only if all
checks passed).
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgead import __version__
from edgead.bundle import SCHEMA_VERSION, InputSpec, Manifest, OutputSpec, write_bundle
from edgead.errors import ExportError
from edgead.export.graphs import OPSET, export_onnx, export_openvino_ir, run_torch
from edgead.export.index_member import build_index_member
from edgead.export.parity import check_graph_parity, check_score_parity
from edgead.models.base import BaseDetector, ExportSpec, Progress, no_progress

logger = logging.getLogger(__name__)

TARGETS = ("onnx", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16")
#: TensorRT engine build settings recorded in manifest.build["tensorrt"] (built on the device).
TENSORRT_BUILD = {"workspace_mib": 1024, "max_batch": 8}

#: evaluate(bundle_path, backend) -> metrics dict (the eval JSON keys); backend None = default.
Evaluator = Callable[[Path, "str | None"], dict[str, Any]]


def _check_choice(kind: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ExportError(f"unknown {kind} {value!r}; use one of {', '.join(allowed)}")


def _normalisation_stats(module: Any) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """(mean, std) on 0..1 RGB recovered from a UInt8Normalize submodule (scale, shift), if any."""
    for sub in module.modules():
        if (
            type(sub).__name__ == "UInt8Normalize"
            and hasattr(sub, "scale")
            and hasattr(sub, "shift")
        ):
            scale = sub.scale.detach().cpu().double().flatten().numpy()
            shift = sub.shift.detach().cpu().double().flatten().numpy()
            std = 1.0 / (255.0 * scale)
            mean = -shift * std
            return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)
    return None, None


def _input_spec(detector: BaseDetector, spec: ExportSpec, meta: dict[str, Any]) -> InputSpec:
    example = spec.example_input
    batch: int | None = None if spec.dynamic_batch else int(example.shape[0])
    if detector.modality == "image":
        if example.dtype != np.uint8 or example.ndim != 4 or example.shape[3] != 3:
            raise ExportError(
                f"{detector.name}: image export needs a uint8 (B, S, S, 3) example "
                f"input; got {example.dtype} {example.shape}"
            )
        mean, std = _normalisation_stats(spec.module)
        size = (int(example.shape[1]), int(example.shape[2]))
        return InputSpec(
            name=spec.input_name,
            dtype="uint8",
            shape=(batch, *size, 3),
            layout="NHWC",
            channel_order="RGB",
            image_size=size,
            resize="area",
            mean=mean,
            std=std,
        )
    if example.ndim != 2:
        raise ExportError(f"{detector.name}: tabular export needs a float32 (B, D) example input")
    names = getattr(detector, "feature_names_", None) or (meta.get("data") or {}).get(
        "feature_names"
    )
    return InputSpec(
        name=spec.input_name,
        dtype="float32",
        shape=(batch, int(example.shape[1])),
        layout="NC",
        channel_order="",
        resize="",
        feature_names=tuple(names) if names else None,
    )


def _reference_inputs(
    detector: BaseDetector, spec: ExportSpec, parity_inputs: np.ndarray | None, seed: int = 0
) -> tuple[np.ndarray, str]:
    """Inputs for the parity check and where they came from."""
    if parity_inputs is not None and len(parity_inputs):
        dtype = np.uint8 if detector.modality == "image" else np.float32
        return np.ascontiguousarray(parity_inputs, dtype=dtype), "run data"
    rng = np.random.default_rng(seed)
    example = spec.example_input
    logger.warning(
        "no training/test data given for the parity check; using the trace example "
        "and random inputs (weaker than real images)"
    )
    if detector.modality == "image":
        noise = rng.integers(0, 256, size=(3, *example.shape[1:]), dtype=np.uint8)
    else:
        noise = (example[:1] + rng.normal(size=(3, example.shape[1]))).astype(np.float32)
    return np.concatenate([example[:1], noise]).astype(example.dtype), "synthetic"


def export_detector(
    detector: BaseDetector,
    meta: dict[str, Any],
    target: str,
    precision: str,
    out: str | Path,
    *,
    parity_inputs: np.ndarray | None = None,
    evaluate: Evaluator | None = None,
    device_profile: str | None = None,
    index: dict[str, Any] | None = None,
    progress: Progress = no_progress,
) -> Manifest:
    """Export a fitted detector to the bundle `out` and return the manifest written.

    Args:
        detector: fitted detector (any registered family).
        meta: the run metadata (run.json): threshold, normalisation, config, metrics.
        target: "onnx" (ONNX Runtime), "openvino" (adds IR) or "tensorrt" (ONNX + engine build
            settings; the engine is built on the device).
        precision: "fp32" or "fp16" (openvino / tensorrt only).
        parity_inputs: a few real inputs (uint8 (N, S, S, 3) images already resized with
            resize_frame, or float32 (N, D) rows) for the parity check; None uses synthetic ones.
        evaluate: measures metrics of a candidate bundle through the runtime (see
            `edgead.runtime.eval.evaluate_bundle`); None skips the metrics.
        device_profile: name of the device profile the export is meant for (recorded).
        index: options for `build_index_member` (nn-index detectors only).

    Raises:
        ExportError: unsupported target/precision, tracing or parity failure (nothing written).
    """
    _check_choice("target", target, TARGETS)
    _check_choice("precision", precision, PRECISIONS)
    if target == "onnx" and precision == "fp16":
        raise ExportError(
            "an --target onnx bundle runs fp32 on ONNX Runtime; for fp16 use "
            "--target openvino or --target tensorrt"
        )
    detector.check_is_fitted()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    spec = detector.export_spec()
    kind = str(spec.postprocess.get("kind"))
    progress(0, 5, "export")
    onnx_model = export_onnx(
        spec.module, spec.example_input, spec.input_name, spec.output_names, spec.dynamic_batch
    )
    timings["onnx_s"] = time.perf_counter() - t0
    members: dict[str, bytes] = {"model.onnx": onnx_model}
    graphs = {"onnx": "model.onnx"}
    if target == "openvino":
        t1 = time.perf_counter()
        xml, weights = export_openvino_ir(onnx_model, fp16=precision == "fp16")
        members.update({"model.xml": xml, "model.bin": weights})
        graphs["openvino"] = "model.xml"
        timings["openvino_s"] = time.perf_counter() - t1
    progress(1, 5, "export")
    arrays = dict(spec.arrays)
    index_spec = None
    index_report: dict[str, Any] | None = None
    if kind.endswith("nn_index"):
        if "memory_bank" not in arrays:
            raise ExportError(
                f"{detector.name}: post-processing {kind!r} needs arrays['memory_bank']"
            )
        bank = arrays.pop("memory_bank")
        options = {"k": int(spec.postprocess.get("k", 1)), **(index or {})}
        members["memory_bank.faiss"], index_spec, index_report = build_index_member(bank, options)
    elif index:
        raise ExportError(
            f"--index applies to nearest-neighbour detectors; {detector.name} has none"
        )
    from edgead.bundle import array_to_npy_bytes

    array_members = {name: f"arrays/{name}.npy" for name in arrays}
    for name, member in array_members.items():
        members[member] = array_to_npy_bytes(arrays[name])

    inputs, inputs_source = _reference_inputs(detector, spec, parity_inputs)
    reference = run_torch(spec.module, inputs, spec.output_names)
    outputs = tuple(
        OutputSpec(name=name, shape=(None, *reference[name].shape[1:]))
        for name in spec.output_names
    )
    threshold = (meta.get("threshold") or {}).get("value")
    build: dict[str, Any] = {}
    if target == "tensorrt":
        build["tensorrt"] = {"precision": precision, **TENSORRT_BUILD}
    from edgead.config import to_dict

    config = meta.get("config") or to_dict(detector.config)
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        edgead_version=__version__,
        detector=detector.name,
        modality=detector.modality,
        target=target,
        precision=precision,
        graphs=graphs,
        input=_input_spec(detector, spec, meta),
        outputs=outputs,
        postprocess=dict(spec.postprocess),
        threshold=None if threshold is None else float(threshold),
        normalisation=dict(meta.get("normalisation") or {}),
        backbone=config.get("backbone"),
        index=index_spec,
        arrays=array_members,
        build=build,
        config=dict(config),
    )
    progress(2, 5, "export")
    with tempfile.TemporaryDirectory(prefix="edgead-export-") as tmp:
        candidate = Path(tmp) / "candidate.edgead"
        write_bundle(candidate, manifest, members)
        t2 = time.perf_counter()
        parity = _parity(detector, candidate, target, precision, inputs, reference)
        timings["parity_s"] = time.perf_counter() - t2
        progress(3, 5, "export")
        metrics: dict[str, Any] = {}
        if evaluate is not None:
            t3 = time.perf_counter()
            metrics = dict(evaluate(candidate, None))
            timings["evaluate_s"] = time.perf_counter() - t3
            if precision == "fp16":
                # model.onnx is fp32 and matched torch within the fp32 tolerance above, so ONNX
                # Runtime's result is the fp32 reference the fp16 change is measured against.
                metrics.update(_fp16_change(metrics, evaluate(candidate, "onnxruntime")))
            metrics.update(_metric_deltas(metrics, meta))
    progress(4, 5, "export")
    import torch

    export_info = {
        "opset": OPSET,
        "exporter": "torch.onnx.export(dynamo=False)",
        "dynamic_batch": bool(spec.dynamic_batch),
        "torch_version": torch.__version__,
        "parity_inputs": {"n": int(len(inputs)), "source": inputs_source},
        "parity": parity,
        "index": index_report,
        "device_profile": device_profile,
        "run": {"seed": meta.get("seed"), "data": meta.get("data")},
        "host": platform.machine(),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }
    manifest = dataclasses.replace(manifest, metrics=metrics, export=export_info)
    written = write_bundle(out, manifest, members)
    progress(5, 5, "export")
    logger.info("exported %s (%s, %s) to %s", detector.name, target, precision, out)
    return written


def _parity(
    detector: BaseDetector,
    candidate: Path,
    target: str,
    precision: str,
    inputs: np.ndarray,
    reference: dict[str, np.ndarray],
) -> dict[str, Any]:
    """Graph and score parity of every backend the target runs on here; ExportError on mismatch."""
    from edgead.runtime.detector import Detector

    backends = ["onnxruntime"] + (["openvino"] if target == "openvino" else [])
    # ONNX Runtime runs the fp32 model.onnx of every bundle: the tight fp32 tolerance holds there.
    torch_scores = detector.score(list(inputs) if detector.modality == "image" else inputs).scores
    report: dict[str, Any] = {}
    for name in backends:
        level = precision if name == "openvino" else "fp32"
        det = Detector.load(candidate, device="cpu", backend=name)
        try:
            if det.fallbacks:
                raise ExportError(
                    f"parity check needs {name}, but it could not load the graph: "
                    f"{det.fallbacks[-1]}"
                )
            graph_out = det._run_graph(inputs)  # noqa: SLF001 - the exporter checks raw outputs
            entry: dict[str, Any] = {
                "backend": det.backend,
                "precision": level,
                "backend_info": det.backend_info,
                "outputs": check_graph_parity(graph_out, reference, level, det.backend),
            }
            if detector.modality == "image":
                results = det(list(inputs), channel_order="RGB")
                scores = np.array([r.raw_score for r in results])  # type: ignore[union-attr]
            else:
                scores = det.score_rows(inputs).raw_scores
            entry["score"] = check_score_parity(scores, torch_scores, level, det.backend)
            report[name] = entry
            logger.info("parity %s: %s", det.backend, entry)
        finally:
            det.close()
    if target == "tensorrt":
        report["tensorrt"] = {
            "checked": False,
            "reason": "the engine is built on the device; ONNX Runtime checked model.onnx here",
        }
    return report


def _fp16_change(metrics: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """{"<metric>_fp32", "<metric>_fp16_change"} for the headline metric (fp16 minus fp32)."""
    out: dict[str, Any] = {}
    for key in ("image_auroc", "auroc"):
        if key in metrics and key in reference:
            out[f"{key}_fp32"] = float(reference[key])
            out[f"{key}_fp16_change"] = float(metrics[key]) - float(reference[key])
            logger.info(
                "fp16 changes %s by %+.4f (fp32 %.4f)",
                key,
                out[f"{key}_fp16_change"],
                reference[key],
            )
    return out


def _metric_deltas(metrics: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """{"<metric>_run", "<metric>_delta"} for the headline metric, vs the run's stored value."""
    run_metrics = {**(meta.get("validation") or {}), **(meta.get("metrics") or {})}
    out: dict[str, Any] = {}
    for key in ("image_auroc", "auroc"):
        if key in metrics and isinstance(run_metrics.get(key), (int, float)):
            out[f"{key}_run"] = float(run_metrics[key])
            out[f"{key}_delta"] = float(metrics[key]) - float(run_metrics[key])
    return out


def export_run(
    run_dir: str | Path,
    target: str,
    precision: str,
    out: str | Path,
    device_profile: str | None = None,
    index: dict[str, Any] | None = None,
    progress: Progress = no_progress,
    data: str | Path | None = None,
) -> Manifest:
    """Export the run in `run_dir` to the bundle `out` (see `export_detector`).

    Parity inputs and export-time metrics come from the run's data (`run.json` data.path, or
    `data`) when it can be read; otherwise synthetic inputs are used and metrics are skipped
    (both logged and recorded in the manifest).
    """
    from edgead.rundir import load_run

    detector, meta = load_run(run_dir)
    data_path = Path(data) if data is not None else _run_data_path(meta)
    parity_inputs = None
    evaluate: Evaluator | None = None
    if data_path is not None and data_path.exists():
        parity_inputs = _parity_inputs_from_data(detector, data_path, meta)
        from edgead.runtime.eval import evaluate_bundle

        def evaluate(bundle: Path, backend: str | None) -> dict[str, Any]:
            return evaluate_bundle(bundle, data_path, device="cpu", backend=backend)
    else:
        logger.warning(
            "run data %s is not available; parity uses synthetic inputs and the "
            "manifest gets no metrics",
            data_path,
        )
    return export_detector(
        detector,
        meta,
        target,
        precision,
        out,
        parity_inputs=parity_inputs,
        evaluate=evaluate,
        device_profile=device_profile,
        index=index,
        progress=progress,
    )


def _run_data_path(meta: dict[str, Any]) -> Path | None:
    path = (meta.get("data") or {}).get("path")
    return Path(path) if path else None


def _parity_inputs_from_data(
    detector: BaseDetector, data_path: Path, meta: dict[str, Any], n_train: int = 3, n_test: int = 3
) -> np.ndarray | None:
    """A few training and test inputs from the run's data, or None (logged) when unreadable."""
    from edgead.runtime.eval import load_eval_data

    try:
        train, test, _, _ = load_eval_data(data_path, meta, detector.modality, with_train=True)
    except Exception as exc:  # noqa: BLE001 - data problems only weaken the check; logged
        logger.warning(
            "cannot read %s for the parity check (%s); using synthetic inputs", data_path, exc
        )
        return None
    # Lazy image sequences load only the items picked here.
    picked = [train[i] for i in range(min(n_train, len(train)))]
    picked += [test[i] for i in range(min(n_test, len(test)))]
    return np.stack(picked) if picked else None
