"""Precision with accuracy control (`edgead export --precision fp32|fp16|bf16|int8`). Export side.

fp32 and fp16 keep the exporter's parity checks (tolerances in `edgead.export.parity`). bf16 and
int8 change the arithmetic too much for a per-output tolerance to mean anything (bf16 keeps 8
mantissa bits; int8 rounds every activation), so they are judged by what matters: the image and
pixel AUROC on the run's labelled test images, scored through the runtime with the low-precision
graph, against the same bundle in fp32 (`measure_change`). A precision whose AUROC drops by more
than `--max-auroc-drop` is refused with the measured drop.

- bf16: OpenVINO's INFERENCE_PRECISION_HINT bf16 (CPUs with avx512_bf16 or AMX); the IR is fp32.
- int8: `edgead.export.quantize` (ONNX Runtime static QDQ, OpenVINO NNCF), calibrated on the
  run's held-out normal images; `INT8_SCOPES` are tried in order, the first within budget kept.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from edgead.errors import ExportError

if TYPE_CHECKING:
    from edgead.runtime.detector import Result

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
#: Precisions judged by the AUROC change through the runtime instead of graph tolerances.
CONTROLLED = ("bf16", "int8")
#: int8 scopes tried in order: everything (fastest), then the backbone only (search in float).
INT8_SCOPES = ("all", "backbone")
#: How the OpenVINO int8 IR is made: "qdq" converts the ONNX Runtime QDQ graph (one int8 graph,
#: one calibration for every backend); "nncf" quantizes the IR with NNCF's accuracy control.
#: Measured on ELPV (224 px, 1 % coreset): image AUROC 0.9160 -> 0.9170 through ONNX Runtime
#: with the QDQ graph, 0.8846 with NNCF (0.022 lower before its accuracy control, which
#: reverted layers for 6 rounds and ended lower; 22 min). docs/LATENCY.md.
INT8_OPENVINO = "qdq"


def check_precision(target: str, precision: str) -> None:
    """ExportError when `precision` is unknown or cannot run on `target`."""
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and target != "openvino":
        raise ExportError(
            "bf16 runs on OpenVINO (CPUs with avx512_bf16 or AMX); export with --target "
            "openvino, or use --precision int8 / fp32 for ONNX Runtime"
        )
    if precision == "fp16" and target == "onnx":
        raise ExportError(
            "an --target onnx bundle runs fp32 on ONNX Runtime; for fp16 use "
            "--target openvino or --target tensorrt"
        )


def reference_error(bundle: Path, backend: str) -> float:
    """Largest max |output - torch fp32 reference| / max |reference| of `bundle`'s graph on its
    reference inputs through `backend` ("onnxruntime" | "openvino", CPU)."""
    from edgead.runtime.detector import Detector

    with Detector.load(bundle, device="cpu", backend=backend) as det:
        if det.fallbacks:
            raise ExportError(f"reference check needs {backend}: {det.fallbacks[-1]}")
        errors = det.reference_errors()
    return max(float(e["max_rel_err"]) for e in errors.values())


def runtime_aurocs(
    bundle: Path,
    backend: str,
    images: Sequence[np.ndarray],
    labels: np.ndarray,
    masks: Sequence[np.ndarray] | None,
) -> tuple[dict[str, float], np.ndarray]:
    """({"image_auroc", "pixel_auroc" (with masks)}, raw scores float64 (N,)) through the runtime.

    Args:
        bundle: a candidate bundle; backend: "onnxruntime" or "openvino" (CPU).
        images: uint8 (S, S, 3) RGB test images; labels: int (N,); masks: bool (S, S) or None.
    """
    from edgead import metrics
    from edgead.runtime.detector import Detector

    labels = np.asarray(labels).astype(np.int64)
    with Detector.load(bundle, device="cpu", backend=backend) as det:
        if det.fallbacks:
            raise ExportError(f"accuracy check needs {backend}: {det.fallbacks[-1]}")
        want_maps = masks is not None
        scores: list[float] = []
        maps: list[np.ndarray] = []
        for start in range(0, len(images), 8):
            batch = [np.asarray(images[i]) for i in range(start, min(start + 8, len(images)))]
            for res in cast("list[Result]", det(batch, channel_order="RGB", maps=want_maps)):
                scores.append(res.raw_score)
                if want_maps and res.anomaly_map is not None:
                    maps.append(res.anomaly_map)
    raw = np.asarray(scores, dtype=np.float64)
    out: dict[str, float] = {}
    if len(np.unique(labels)) == 2:
        out["image_auroc"] = float(metrics.image_metrics(labels, raw)["auroc"])
    if want_maps:
        truth = np.stack([np.asarray(m, dtype=bool) for m in masks])  # type: ignore[union-attr]
        if truth.any() and not truth.all():
            out["pixel_auroc"] = float(metrics.pixel_metrics(truth, np.stack(maps))["pixel_auroc"])
    return out, raw


def measure_change(
    reference: dict[str, float],
    got: dict[str, float],
    ref_scores: np.ndarray,
    scores: np.ndarray,
) -> dict[str, float]:
    """{"<metric>_fp32", "<metric>", "<metric>_drop", "score_max_rel_change",
    "score_median_ratio"}: AUROC drops (positive = worse) and how raw scores moved."""
    out: dict[str, float] = {}
    for key in ("image_auroc", "pixel_auroc"):
        if key in reference and key in got:
            out[f"{key}_fp32"] = reference[key]
            out[key] = got[key]
            out[f"{key}_drop"] = reference[key] - got[key]
    denom = np.maximum(np.abs(ref_scores), 1e-12)
    out["score_max_rel_change"] = float(np.max(np.abs(scores - ref_scores) / denom))
    out["score_median_ratio"] = float(np.median(scores / denom))
    return out


def worst_drop(change: dict[str, float]) -> tuple[str, float]:
    """(metric, drop) of the largest AUROC drop in a `measure_change` record."""
    drops = {k[: -len("_drop")]: v for k, v in change.items() if k.endswith("_drop")}
    if not drops:
        return "none", 0.0
    key = max(drops, key=lambda k: drops[k])
    return key, float(drops[key])


def over_budget(changes: dict[str, dict[str, float]], max_drop: float) -> str | None:
    """A reason naming backend, metric and drop when any backend's drop exceeds `max_drop`."""
    for backend, change in changes.items():
        metric, drop = worst_drop(change)
        if drop > max_drop:
            return f"{metric} drops by {drop:.4f} on {backend} (> --max-auroc-drop {max_drop})"
    return None


class _CompiledBackend:
    """A `Backend` over an OpenVINO compiled model (NNCF's candidates), for the Detector."""

    name = "openvino/nncf-candidate"
    max_batch: int | None = 1

    def __init__(self, compiled: Any) -> None:
        from edgead.runtime.backends.openvino import _public_name

        self._request = compiled.create_infer_request()
        self._names = [_public_name(out) for out in compiled.outputs]
        self.info: dict[str, object] = {}

    def run(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        self._request.infer({0: inputs}, share_inputs=False)
        return {
            name: np.array(self._request.get_output_tensor(i).data, dtype=np.float32, copy=True)
            for i, name in enumerate(self._names)
        }

    def close(self) -> None:
        self._request = None


def nncf_validator(
    bundle: Path,
    labels: np.ndarray,
    masks: Sequence[np.ndarray] | None,
    reference: dict[str, float],
) -> Any:
    """validate(compiled, items) for NNCF: 1 - the worst AUROC drop vs `reference` (fp32).

    The candidate's outputs go through the runtime's own post-processing (a `Detector` over the
    fp32 candidate bundle's manifest, with the compiled model as its backend), so the metric is
    the one the budget is stated in: the fp32 model scores 1.0, a drop of x scores 1 - x.
    """
    from edgead import metrics
    from edgead.bundle import read_bundle
    from edgead.runtime.detector import Detector

    verified = read_bundle(bundle)

    def validate(compiled: Any, items: Any) -> float:
        det = Detector(verified, _CompiledBackend(compiled))
        scores: list[float] = []
        maps: list[np.ndarray] = []
        for item in items:
            results = det(list(np.asarray(item)), channel_order="RGB", maps=masks is not None)
            (res,) = cast("list[Result]", results)
            scores.append(res.raw_score)
            if res.anomaly_map is not None:
                maps.append(res.anomaly_map)
        if len(scores) != len(labels):
            raise ExportError(f"NNCF validated {len(scores)} items, {len(labels)} labelled")
        got: dict[str, float] = {}
        if "image_auroc" in reference:
            got["image_auroc"] = float(metrics.image_metrics(labels, np.asarray(scores))["auroc"])
        if "pixel_auroc" in reference and masks is not None:
            truth = np.stack([np.asarray(m, dtype=bool) for m in masks])
            got["pixel_auroc"] = float(metrics.pixel_metrics(truth, np.stack(maps))["pixel_auroc"])
        drops = [reference[k] - got[k] for k in got]
        return 1.0 - max(drops, default=0.0)

    return validate


def int8_members(
    members: dict[str, bytes],
    graphs: dict[str, str],
    calibration: np.ndarray,
    input_name: str,
    scope: str,
    *,
    accuracy: tuple[Any, np.ndarray, float] | None = None,
    openvino: str = INT8_OPENVINO,
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """(members with int8 graphs, report): QDQ model.onnx and, with IR, an int8 model.xml/.bin.

    Args:
        members: the fp32 bundle members; graphs: format -> member (as the manifest's).
        calibration: uint8 (N, S, S, 3) normal images at the input size.
        accuracy: (validate, validation images uint8 (N, S, S, 3), max_drop) for NNCF's
            accuracy control (`nncf_validator`; openvino "nncf" only); None quantizes without it.
        openvino: "qdq" (the QDQ graph converted to IR) or "nncf" (see `INT8_OPENVINO`).
    """
    from edgead.export.graphs import export_openvino_ir
    from edgead.export.quantize import int8_openvino_ir, quantize_onnx_int8, quantize_openvino_int8

    out = dict(members)
    report: dict[str, Any] = {"scope": scope, "calibration_images": int(len(calibration))}
    onnx_member = graphs["onnx"]
    out[onnx_member] = quantize_onnx_int8(members[onnx_member], calibration, input_name, scope)
    report["onnx"] = "onnxruntime.quantization.quantize_static (QDQ, u8 act / s8 per-channel)"
    if "openvino" not in graphs:
        return out, report
    xml_member = graphs["openvino"]
    bin_member = xml_member[: -len(".xml")] + ".bin"
    if openvino == "qdq":
        out[xml_member], out[bin_member] = export_openvino_ir(out[onnx_member], fp16=False)
        report["openvino"] = {"method": "the QDQ graph converted to IR (FakeQuantize)"}
    else:
        validate, val_images, max_drop = accuracy if accuracy is not None else (None, None, 0.0)
        xml, weights, keep_float = int8_openvino_ir(members[onnx_member])
        xml, weights, ov_report = quantize_openvino_int8(
            xml,
            weights,
            calibration,
            scope,
            validate=validate,
            validation_images=val_images,
            max_drop=max_drop,
            keep_float=keep_float,
        )
        out[xml_member], out[bin_member] = xml, weights
        report["openvino"] = ov_report
    return out, report
