"""--precision bf16/int8 with accuracy control, --precision auto / --index auto by measurement."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgead.bundle import read_bundle
from edgead.errors import BundleError, ExportError
from edgead.export import export_detector
from edgead.export import exporter as exporter_mod
from edgead.export.exporter import ExportData
from edgead.export.quantize import quantize_onnx_int8, search_nodes
from edgead.runtime.detector import Detector
from edgead.runtime.reference import tolerance_for
from tests.helpers.tiny_detectors import (
    TinyPatch,
    fitted_tiny,
    parity_images,
    synthetic_images,
    tiny_export_data,
)


@pytest.fixture(scope="module")
def tiny() -> tuple[TinyPatch, dict[str, Any]]:
    return fitted_tiny()


@pytest.fixture(scope="module")
def data() -> ExportData:
    return tiny_export_data()


def test_bf16_needs_openvino_and_int8_needs_test_data(
    tiny: tuple[TinyPatch, dict[str, Any]], tmp_path: Path
) -> None:
    det, meta = tiny
    with pytest.raises(ExportError, match="bf16 runs on OpenVINO"):
        export_detector(det, meta, "onnx", "bf16", tmp_path / "a.edgead")
    with pytest.raises(ExportError, match="labelled test images"):
        export_detector(
            det, meta, "onnx", "int8", tmp_path / "b.edgead", parity_inputs=parity_images()
        )
    assert not (tmp_path / "a.edgead").exists() and not (tmp_path / "b.edgead").exists()


def test_int8_graph_keeps_the_search_float_and_records_the_auroc_change(
    tiny: tuple[TinyPatch, dict[str, Any]], data: ExportData, tmp_path: Path
) -> None:
    det, meta = tiny
    out = tmp_path / "int8.edgead"
    m = export_detector(
        det,
        meta,
        "openvino",
        "int8",
        out,
        parity_inputs=parity_images(),
        index={"index": "graph"},
        data=data,
    )
    assert m.precision == "int8"
    report = m.export["precision"]
    assert report["rejected"] is None and report["calibration_images"] == 6
    for backend in ("onnxruntime", "openvino"):
        change = report["auroc_change"][backend]
        assert change["image_auroc_drop"] <= report["max_auroc_drop"]
    # the int8 tolerance devices check backends against: measured here, twice the worst error
    errors = report["reference_max_rel_err"]
    tolerance = m.reference["tolerance"]["int8"]
    assert set(errors) == {"onnxruntime", "openvino"}
    assert tolerance == pytest.approx(2.0 * max(errors.values())) and tolerance > 1e-3
    for backend in ("onnxruntime", "openvino"):
        with Detector.load(out, device="cpu", backend=backend, verify=True) as det:
            check = det.reference_check
            assert check is not None and check.precision == "int8" and check.passed
    older = dataclasses.replace(m, reference={**m.reference, "tolerance": {"fp32": 1e-3}})
    with pytest.raises(BundleError, match="re-export"):
        tolerance_for(older, "int8")  # an int8 bundle exported before tolerances were recorded
    bundle = read_bundle(out)
    onnx_int8 = bundle.member("model.onnx")
    assert b"QuantizeLinear" in onnx_int8  # a QDQ graph (what TensorRT builds int8 from)
    assert search_nodes(onnx_int8) and b"FakeQuantize" in bundle.member("model.xml")
    import onnx

    graph = onnx.load_from_string(onnx_int8).graph
    # nothing of the search is quantized: calibration on normal images would clip anomalies
    by_output = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.op_type == "MatMul":
            assert all(
                by_output.get(i) is None or by_output[i].op_type != "DequantizeLinear"
                for i in node.input
            )


def test_a_precision_that_breaks_the_budget_is_refused_with_the_drop(
    tiny: tuple[TinyPatch, dict[str, Any]],
    data: ExportData,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    det, meta = tiny
    real = exporter_mod.runtime_aurocs

    def worse_when_int8(bundle: Path, backend: str, *args: Any) -> Any:
        metrics, scores = real(bundle, backend, *args)
        if read_bundle(bundle).manifest.precision == "int8":
            metrics = {**metrics, "image_auroc": metrics["image_auroc"] - 0.02}
        return metrics, scores

    monkeypatch.setattr(exporter_mod, "runtime_aurocs", worse_when_int8)
    out = tmp_path / "refused.edgead"
    with pytest.raises(ExportError, match=r"image_auroc drops by 0\.0200 on onnxruntime"):
        export_detector(det, meta, "onnx", "int8", out, parity_inputs=parity_images(), data=data)
    assert not out.exists()


def test_qdq_quantization_excludes_nothing_without_a_search() -> None:
    from edgead.export.graphs import export_onnx
    from tests.helpers.tiny_detectors import TinyEmbedder

    model = export_onnx(
        TinyEmbedder().eval(), np.zeros((1, 32, 32, 3), np.uint8), "images", ("embedding",)
    )
    assert search_nodes(model) == []
    q = quantize_onnx_int8(model, np.stack(synthetic_images(4, seed=2)), "images", "backbone")
    assert b"QuantizeLinear" in q


def test_auto_exports_candidates_and_keeps_the_fastest(
    tiny: tuple[TinyPatch, dict[str, Any]], data: ExportData, tmp_path: Path
) -> None:
    det, meta = tiny
    out = tmp_path / "auto.edgead"
    m = export_detector(
        det,
        meta,
        "onnx",
        "auto",
        out,
        parity_inputs=parity_images(),
        index={"index": "auto"},
        data=data,
        threads=1,
    )
    record = m.export["auto"]
    labels = [c["candidate"] for c in record["candidates"]]
    assert labels == ["graph/fp32", "graph/int8", "ladder/fp32", "ladder/int8"]
    timed = {c["candidate"]: c for c in record["candidates"] if c["rejected"] is None}
    assert timed and all(c["ms_per_frame"] > 0 for c in timed.values())
    fastest = min(timed, key=lambda k: timed[k]["ms_per_frame"])
    assert record["chosen"] == fastest
    assert m.precision == timed[fastest]["precision"]
    assert read_bundle(out).manifest.export["auto"]["chosen"] == fastest
