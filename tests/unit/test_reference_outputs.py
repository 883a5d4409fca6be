"""Reference outputs in the bundle: backends are checked against the exported model's outputs.

A bundle whose graph was altered after export (weights changed, hashes recomputed, so the hash
check passes) is refused by `Detector.load(..., verify=True)` on ONNX Runtime and OpenVINO
(explicit f32 hint). The TensorRT path runs the same check; here it is driven by a numpy fake
backend standing in for the engine (no GPU in unit tests), and a failing engine is not cached.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from typer.testing import CliRunner

from edgead.bundle import read_bundle, write_bundle
from edgead.errors import BundleError, ExportError, ReferenceMismatchError
from edgead.runtime import Detector
from edgead.runtime.backends import tensorrt as trt_backend
from edgead.runtime.backends.base import NumpyBackend
from edgead.runtime.backends.ort import OrtBackend
from edgead.runtime.reference import (
    DEFAULT_TOLERANCE,
    MAX_ITEMS,
    load_reference,
    max_errors,
    pick_reference,
)
from tests.helpers.tiny_detectors import fitted_tiny, parity_images, tiny_bundle

torch.set_num_threads(1)


def _altered_copy(src: Path, dst: Path, *, onnx_graph: bool, ir: bool, factor: float = 1.5) -> Path:
    """`src` with conv.weight scaled by `factor` in model.onnx and/or the OpenVINO IR, written
    with write_bundle so every sha256 in the manifest matches the altered members."""
    from edgead.export.graphs import export_openvino_ir

    bundle = read_bundle(src)
    members = dict(bundle.members)
    model = onnx.load_from_string(members["model.onnx"])
    for init in model.graph.initializer:
        if init.name == "conv.weight":
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * factor, init.name))
    altered = model.SerializeToString()
    if onnx_graph:
        members["model.onnx"] = altered
    if ir:
        members["model.xml"], members["model.bin"] = export_openvino_ir(altered, fp16=False)
    write_bundle(dst, bundle.manifest, members)
    return dst


def test_export_stores_reference_inputs_and_fp32_outputs() -> None:
    bundle = read_bundle(tiny_bundle("openvino"))
    spec = bundle.manifest.reference
    assert spec["tolerance"] == DEFAULT_TOLERANCE and spec["source"].startswith("torch fp32")
    for member in [spec["inputs"], *spec["outputs"].values()]:
        assert member in bundle.manifest.files  # hashed like every member
    inputs, outputs = load_reference(bundle)
    assert inputs.dtype == np.uint8 and inputs.shape == (MAX_ITEMS, 32, 32, 3)
    # spread over the parity inputs: the first (normal) and the last (with a bright square)
    parity = parity_images()[:4]
    np.testing.assert_array_equal(inputs, parity[[0, 3]])
    det, _ = fitted_tiny()
    with torch.no_grad():
        expected = det.embedder(torch.from_numpy(inputs))[0].numpy()
    np.testing.assert_allclose(outputs["embedding"], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_verify_passes_on_the_exported_graph(backend: str) -> None:
    with Detector.load(tiny_bundle("openvino"), device="cpu", backend=backend, verify=True) as det:
        check = det.reference_check
        assert det.backend.startswith(backend) and not det.fallbacks
        assert check is not None and check.passed and check.precision == "fp32"
        assert check.max_rel_err < 1e-5 and check.n_items == MAX_ITEMS
        if backend == "openvino":
            assert det.backend_info["precision_hint_used"] == "f32"  # explicit f32, not bf16


def test_verify_is_off_by_default_on_cpu_backends() -> None:
    with Detector.load(tiny_bundle("onnx"), device="cpu") as det:
        assert det.reference_check is None
        assert det.check_reference().passed  # on request, without raising


def test_altered_graph_is_refused_on_onnxruntime_and_openvino(tmp_path: Path) -> None:
    bad = _altered_copy(
        tiny_bundle("openvino"), tmp_path / "altered.edgead", onnx_graph=True, ir=True
    )
    read_bundle(bad)  # the hashes were recomputed: the bundle itself verifies
    with Detector.load(bad, device="cpu", backend="onnxruntime") as det:  # not checked: loads
        assert det.reference_check is None
    with pytest.raises(ReferenceMismatchError) as info:
        Detector.load(bad, device="cpu", backend="openvino", verify=True)
    message = str(info.value)
    assert "openvino/CPU fails the bundle's reference check" in message
    assert "onnxruntime/CPUExecutionProvider fails the bundle's reference check" in message
    assert "output 'embedding'" in message and "tolerance 0.001 at fp32" in message
    with pytest.raises(ReferenceMismatchError, match=r"relative \d"):
        Detector.load(bad, device="cpu", backend="onnxruntime", verify=True)


def test_altered_ir_falls_back_to_a_backend_that_passes(tmp_path: Path) -> None:
    bad = _altered_copy(tiny_bundle("openvino"), tmp_path / "ir.edgead", onnx_graph=False, ir=True)
    with Detector.load(bad, device="cpu", backend="openvino", verify=True) as det:
        assert det.backend == "onnxruntime/CPUExecutionProvider"
        assert len(det.fallbacks) == 1 and "openvino/CPU fails" in det.fallbacks[0]
        assert det.reference_check is not None and det.reference_check.passed


def test_small_weight_change_is_measured_and_judged_by_the_manifest_tolerance(
    tmp_path: Path,
) -> None:
    slight = _altered_copy(
        tiny_bundle("onnx"), tmp_path / "slight.edgead", onnx_graph=True, ir=False, factor=1.0001
    )
    with Detector.load(slight, device="cpu", verify=True) as det:  # within fp32's 1e-3
        assert 1e-6 < det.reference_check.max_rel_err < DEFAULT_TOLERANCE["fp32"]
    bundle = read_bundle(slight)
    tight = dataclasses.replace(
        bundle.manifest, reference={**bundle.manifest.reference, "tolerance": {"fp32": 1e-6}}
    )
    write_bundle(tmp_path / "tight.edgead", tight, dict(bundle.members))
    with pytest.raises(ReferenceMismatchError, match="tolerance 1e-06 at fp32"):
        Detector.load(tmp_path / "tight.edgead", device="cpu", verify=True)


def test_verify_needs_reference_outputs(tmp_path: Path) -> None:
    bundle = read_bundle(tiny_bundle("onnx"))
    members = {k: v for k, v in bundle.members.items() if not k.startswith("reference/")}
    old = dataclasses.replace(bundle.manifest, reference={})
    write_bundle(tmp_path / "old.edgead", old, members)
    with pytest.raises(BundleError, match="carries no reference outputs"):
        Detector.load(tmp_path / "old.edgead", device="cpu", verify=True)
    with Detector.load(tmp_path / "old.edgead", device="cpu") as det:  # default: not checked
        assert det.reference_check is None


def test_max_errors_and_pick_reference() -> None:
    expected = np.array([[1.0, -4.0], [2.0, 0.0]], np.float32)
    assert max_errors(expected + 0.004, expected) == pytest.approx((0.004, 0.001), rel=1e-3)
    assert np.isnan(max_errors(np.full_like(expected, np.nan), expected)[1])
    with pytest.raises(ValueError, match="shape"):
        max_errors(expected[:1], expected)
    big = {"embedding": np.zeros((6, 4096, 512), np.float32)}  # 8 MiB per item
    inputs, outputs = pick_reference(np.arange(12, dtype=np.float32).reshape(6, 2), big)
    assert len(inputs) == 1 and outputs["embedding"].shape[0] == 1
    small = {"score": np.arange(6, dtype=np.float32)}
    inputs, outputs = pick_reference(np.arange(12, dtype=np.float32).reshape(6, 2), small)
    assert inputs[:, 0].tolist() == [0, 10] and outputs["score"].tolist() == [0, 5]


# ---------------------------------------------------------------- TensorRT, with a fake engine
@pytest.fixture
def fake_tensorrt(monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """Replace TensorRT and cuda-python by fakes: the "engine" is ONNX Runtime on model.onnx,
    its outputs scaled by `state["scale"]` (1.0: a correct engine; 1.5: a wrong one)."""
    state = {"scale": 1.0, "builds": 0}
    cudart = SimpleNamespace(
        cudaGetDeviceProperties=lambda device: (0, SimpleNamespace(name=b"Fake GPU\x00"))
    )
    monkeypatch.setattr(
        trt_backend, "_import_trt", lambda: (SimpleNamespace(__version__="10.3.0"), cudart)
    )

    def build(onnx_model: bytes, settings: dict, shape: tuple) -> bytes:
        state["builds"] += 1
        return onnx_model  # the fake engine's bytes: the graph the fake backend runs

    def backend(engine: bytes, precision: str = "fp32") -> NumpyBackend:
        ort = OrtBackend(engine, device="cpu", threads=1)

        def run(x: np.ndarray) -> dict[str, np.ndarray]:
            return {k: v * state["scale"] for k, v in ort.run(x).items()}

        fake = NumpyBackend(run, name="tensorrt/Fake GPU")
        fake.info["precision"] = precision
        return fake

    monkeypatch.setattr(trt_backend, "build_engine_bytes", build)
    monkeypatch.setattr(trt_backend, "TensorRtBackend", backend)
    return state


def _engines(bundle: Path) -> list[Path]:
    return sorted(trt_backend.engine_cache_dir(bundle).glob("*.engine"))


def test_wrong_engine_is_not_cached_and_not_served(tmp_path: Path, fake_tensorrt: dict) -> None:
    bundle = tmp_path / "trt.edgead"
    bundle.write_bytes(tiny_bundle("tensorrt").read_bytes())
    fake_tensorrt["scale"] = 1.5
    with pytest.raises(ReferenceMismatchError, match="tensorrt/Fake GPU fails"):
        trt_backend.build_checked_engine(read_bundle(bundle))
    assert _engines(bundle) == []
    res = CliRunner().invoke(_app(), ["build-engine", str(bundle)])
    assert res.exit_code == 2 and "fails the bundle's reference check" in res.output
    assert _engines(bundle) == []
    # Detector.load: TensorRT refused (recorded), ONNX Runtime on the CPU serves instead.
    with Detector.load(bundle, device="cuda", backend="tensorrt") as det:
        assert det.backend == "onnxruntime/CPUExecutionProvider"
        assert "tensorrt/Fake GPU fails the bundle's reference check" in det.fallbacks[0]
    assert _engines(bundle) == []


def test_correct_engine_is_checked_cached_and_verified_by_default(
    tmp_path: Path, fake_tensorrt: dict
) -> None:
    bundle = tmp_path / "trt.edgead"
    bundle.write_bytes(tiny_bundle("tensorrt").read_bytes())
    res = CliRunner().invoke(_app(), ["build-engine", str(bundle)])
    assert res.exit_code == 0, res.output
    assert "reference check passed" in res.output
    assert len(_engines(bundle)) == 1 and fake_tensorrt["builds"] == 1
    with Detector.load(bundle, device="cuda", backend="tensorrt") as det:  # verify default on
        assert det.backend == "tensorrt/Fake GPU" and not det.fallbacks
        assert det.reference_check is not None and det.reference_check.passed
    assert fake_tensorrt["builds"] == 1  # the cached engine was used
    fake_tensorrt["scale"] = 1.5  # the cached engine now "runs wrong": refused at load
    with Detector.load(bundle, device="cuda", backend="tensorrt") as det:
        assert det.backend.startswith("onnxruntime/") and "tensorrt/Fake GPU fails" in str(
            det.fallbacks
        )


def test_tensorrt_needs_version_10(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from edgead.errors import BackendUnavailableError

    monkeypatch.setitem(sys.modules, "tensorrt", SimpleNamespace(__version__="8.5.2"))
    monkeypatch.setattr(trt_backend, "import_cudart", lambda: SimpleNamespace())
    with pytest.raises(BackendUnavailableError, match="TensorRT 8.5.2 is installed.*>= 10"):
        trt_backend._import_trt()


def _app():  # type: ignore[no-untyped-def]
    from edgead.cli.main import app

    return app


def test_tensorrt_target_refused_for_tabular_and_engine_alias(tmp_path: Path) -> None:
    from edgead.export import export_detector
    from tests.helpers.tiny_detectors import TinyRows, TinyRowsConfig, parity_images, run_meta

    rows = TinyRows(TinyRowsConfig())
    data = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    rows.fit(data)
    meta = run_meta(rows.score(data).scores)
    with pytest.raises(ExportError, match="gains nothing|cannot speed up"):
        export_detector(rows, meta, "tensorrt", "fp32", tmp_path / "rows.edgead")
    det, meta = fitted_tiny()
    manifest = export_detector(
        det,
        meta,
        "engine",
        "fp16",
        tmp_path / "engine.edgead",
        parity_inputs=parity_images()[:2],
        index={"index": "flat"},
    )
    assert manifest.target == "tensorrt" and manifest.build["tensorrt"]["precision"] == "fp16"


def test_cli_tabular_run_with_tensorrt_profile_exports_onnx_and_predict_verifies(
    tmp_path: Path,
) -> None:
    import json

    from edgead.rundir import save_run
    from tests.helpers.tiny_detectors import TinyRows, TinyRowsConfig, run_meta

    rows = TinyRows(TinyRowsConfig())
    data = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    rows.fit(data)
    run_dir = save_run(tmp_path / "run", rows, run_meta(rows.score(data).scores))
    out = tmp_path / "rows.edgead"
    runner = CliRunner()
    res = runner.invoke(
        _app(), ["export", str(run_dir), "--device", "jetson-orin-nano", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "gains nothing from TensorRT" in " ".join(res.output.split())
    assert read_bundle(out).manifest.target == "onnx"
    res = runner.invoke(
        _app(), ["export", str(run_dir), "--target", "tensorrt", "--out", str(tmp_path / "x")]
    )
    assert res.exit_code == 2 and "cannot speed up" in " ".join(res.output.split())
    csv = tmp_path / "rows.csv"
    csv.write_text("a,b,c\n0.1,0.2,0.3\n3,3,3\n")
    res = runner.invoke(_app(), ["predict", str(out), str(csv), "--verify", "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert payload["reference_check"]["passed"] and len(payload["results"]) == 2
