"""Export -> bundle -> runtime on tiny detectors: parity, results, refusals, backend fallbacks, CLI.

Tolerances: fp32 graph outputs within 1e-4 relative of torch (the exporter's own check), runtime
scores within 1e-4 relative of `detector.score` (the exporter allows 1e-3; the tiny graph is
far tighter), anomaly maps within 1e-4 absolute.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgead.bundle import read_bundle
from edgead.errors import BackendUnavailableError, ConfigError, DataError, ExportError
from edgead.export import export_detector
from edgead.runtime import Detector, Result
from edgead.runtime import detector as detector_module
from edgead.runtime.backends.base import Backend, NumpyBackend
from tests.helpers.tiny_detectors import (
    SIZE_PX,
    TinyPatch,
    TinyPatchConfig,
    TinyRows,
    TinyRowsConfig,
    fitted_tiny,
    parity_images,
    run_meta,
    synthetic_images,
    tiny_bundle,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny() -> TinyPatch:
    return fitted_tiny()[0]


@pytest.fixture(scope="module")
def meta() -> dict:
    return fitted_tiny()[1]


@pytest.fixture(scope="module")
def test_images() -> np.ndarray:
    return parity_images()


@pytest.fixture(scope="module")
def onnx_bundle() -> Path:
    return tiny_bundle("onnx")


@pytest.fixture(scope="module")
def openvino_bundle() -> Path:
    return tiny_bundle("openvino")


@pytest.fixture(scope="module")
def rows_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TinyRows, np.ndarray]:
    rng = np.random.default_rng(0)
    det = TinyRows(TinyRowsConfig())
    det.fit(rng.normal(size=(200, 5)).astype(np.float32))
    rows = rng.normal(size=(20, 5)).astype(np.float32) * 2
    out = tmp_path_factory.mktemp("b") / "rows.edgead"
    meta = {**run_meta(det.score(rows).scores), "data": {"feature_names": list("abcde")}}
    export_detector(det, meta, "onnx", "fp32", out, parity_inputs=rows[:5])
    return out, det, rows


def test_manifest_records_contract_threshold_and_parity(onnx_bundle: Path, meta: dict) -> None:
    bundle = read_bundle(onnx_bundle)
    m = bundle.manifest
    assert (m.detector, m.modality, m.target, m.precision) == (
        "_tiny_patch",
        "image",
        "onnx",
        "fp32",
    )
    assert m.input.dtype == "uint8" and m.input.shape == (None, SIZE_PX, SIZE_PX, 3)
    assert m.input.mean == pytest.approx((0.485, 0.456, 0.406), abs=1e-5)
    assert m.input.std == pytest.approx((0.229, 0.224, 0.225), abs=1e-5)
    assert [o.name for o in m.outputs] == ["embedding"] and m.outputs[0].shape == (None, 16, 8)
    assert m.threshold == pytest.approx(meta["threshold"]["value"])
    assert m.normalisation == meta["normalisation"]
    assert m.index is not None and m.index.factory == "Flat" and m.index.n_vectors == 8 * 16
    assert set(m.files) == {
        "model.onnx",
        "memory_bank.faiss",
        "reference/inputs.npy",
        "reference/embedding.npy",
    }
    parity = m.export["parity"]["onnxruntime"]
    assert parity["outputs"]["embedding"]["max_rel_err"] < 1e-4
    assert parity["score"]["max_rel_err"] < 1e-3
    assert m.export["opset"] == 17 and m.export["parity_inputs"]["source"] == "run data"


@pytest.mark.parametrize("which", ["onnx_bundle", "openvino_bundle"])
def test_runtime_matches_torch_scores_and_maps(
    request: pytest.FixtureRequest, which: str, tiny: TinyPatch, test_images: np.ndarray
) -> None:
    path = request.getfixturevalue(which)
    expected = tiny.score(list(test_images))
    with Detector.load(path, device="cpu", threads=1) as det:
        assert det.backend == (
            "openvino/CPU" if which == "openvino_bundle" else "onnxruntime/CPUExecutionProvider"
        )
        assert det.fallbacks == []
        results = det(list(test_images), channel_order="RGB")
    raw = np.array([r.raw_score for r in results])
    np.testing.assert_allclose(raw, expected.scores, rtol=1e-4)
    maps = np.stack([r.anomaly_map for r in results])
    np.testing.assert_allclose(maps, expected.anomaly_maps, atol=1e-4)
    assert raw[3:].min() > raw[:3].max(), "the bright squares must score above normal images"
    assert all(
        set(r.timings_ms) == {"preprocess", "graph", "search", "postprocess"} for r in results
    )


def test_openvino_precision_hint_is_explicit(openvino_bundle: Path) -> None:
    with Detector.load(openvino_bundle, device="cpu", backend="openvino") as det:
        info = det.backend_info
    assert info["precision_hint_requested"] == "f32"
    assert info["precision_hint_used"] == "f32"


def test_frame_resolution_channel_order_and_normalised_score(onnx_bundle: Path) -> None:
    rgb = np.ascontiguousarray(
        np.kron(synthetic_images(1, seed=5, anomalous=True)[0], np.ones((3, 4, 1), np.uint8))
    )  # (96, 128, 3)
    with Detector.load(onnx_bundle, device="cpu") as det:
        from_rgb = det(rgb, channel_order="RGB")
        from_bgr = det(rgb[:, :, ::-1].copy())  # BGR is the default
        swapped = det(rgb)  # RGB fed as BGR: a different picture
        thr = det.manifest.threshold
        norm = det.manifest.normalisation
    assert isinstance(from_rgb, Result)
    assert from_rgb.anomaly_map.shape == (96, 128) and from_rgb.anomaly_map.dtype == np.float32
    assert from_bgr.raw_score == pytest.approx(from_rgb.raw_score, rel=1e-6)
    assert swapped.raw_score != pytest.approx(from_rgb.raw_score, rel=1e-3)
    expected = np.clip((from_rgb.raw_score - thr) / (norm["max"] - norm["min"]) + 0.5, 0, 1)
    assert from_rgb.score == pytest.approx(expected, abs=1e-6)
    assert from_rgb.is_anomaly == (from_rgb.raw_score >= thr)
    assert (from_rgb.score >= 0.5) == from_rgb.is_anomaly


@pytest.mark.parametrize(
    "frame, match",
    [
        (np.zeros((32, 32, 3), np.float32), "uint8"),
        (np.zeros((32, 32, 5), np.uint8), "shape"),
        (np.zeros((0, 32, 3), np.uint8), "empty|shape"),
        ("image.png", "numpy array"),
    ],
)
def test_wrong_frames_are_refused(onnx_bundle: Path, frame: object, match: str) -> None:
    with Detector.load(onnx_bundle, device="cpu") as det, pytest.raises(DataError, match=match):
        det([frame])  # type: ignore[list-item]


def test_rows_bundle_scores_rows_and_refuses_bad_rows(rows_bundle: tuple) -> None:
    path, det_torch, rows = rows_bundle
    with Detector.load(path, device="cpu") as det:
        assert det.manifest.input.feature_names == tuple("abcde")
        scores = det.score_rows(rows)
        np.testing.assert_allclose(scores.raw_scores, det_torch.score(rows).scores, rtol=1e-5)
        assert scores.is_anomaly.dtype == bool and scores.scores.shape == (20,)
        with pytest.raises(DataError, match="4 columns but the detector was trained on 5"):
            det.score_rows(rows[:, :4])
        with pytest.raises(DataError, match="non-empty"):
            det.score_rows(np.zeros((0, 5), np.float32))
        with pytest.raises(DataError, match="equal-length rows"):
            det.score_rows([[1.0] * 5, [1.0] * 4])  # ragged
        assert det.score_rows(rows[0]).raw_scores.shape == (1,)  # one 1-D row
        with pytest.raises(DataError, match="NaN"):
            det.score_rows(np.full((2, 5), np.nan))
        with pytest.raises(DataError, match="numeric"):
            det.score_rows(np.array([["a"] * 5]))
        with pytest.raises(DataError, match="score_rows"):
            det(np.zeros((8, 8, 3), np.uint8))


def test_image_bundle_refuses_rows(onnx_bundle: Path) -> None:
    with Detector.load(onnx_bundle, device="cpu") as det, pytest.raises(DataError, match="images"):
        det.score_rows(np.zeros((2, 3), np.float32))


def test_backend_failing_to_initialise_falls_back_and_says_so(
    openvino_bundle: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(bundle: object, device: str, threads: object) -> Backend:
        raise BackendUnavailableError("simulated: plugin crashed while compiling")

    monkeypatch.setitem(detector_module.BACKEND_FACTORIES, "openvino", broken)
    with caplog.at_level(logging.WARNING, logger="edgead.runtime.detector"):
        det = Detector.load(openvino_bundle, device="cpu")
    assert det.backend == "onnxruntime/CPUExecutionProvider"
    assert len(det.fallbacks) == 1 and det.fallbacks[0].startswith("wanted openvino/CPU: simulated")
    assert "simulated: plugin crashed" in caplog.text
    assert np.isfinite(det(np.zeros((40, 40, 3), np.uint8)).raw_score)
    det.close()


def test_absent_devices_fall_back_to_ort_cpu(
    openvino_bundle: Path, tmp_path: Path, tiny: TinyPatch, meta: dict
) -> None:
    with Detector.load(openvino_bundle, device="npu") as det:  # no NPU plugin on the test machine
        assert det.backend in ("openvino/NPU", "onnxruntime/CPUExecutionProvider")
        if det.backend.startswith("onnxruntime"):
            assert det.fallbacks and "NPU" in det.fallbacks[0]
    trt = tmp_path / "trt.edgead"
    m = export_detector(tiny, meta, "tensorrt", "fp16", trt)
    assert (
        m.build["tensorrt"]["precision"] == "fp16"
        and m.export["parity"]["tensorrt"]["checked"] is False
    )
    assert m.export["parity_inputs"]["source"] == "synthetic"
    with Detector.load(trt, device="cuda") as det:
        if det.backend.startswith("onnxruntime/CPU"):
            assert det.fallbacks[0].startswith("wanted tensorrt/cuda")
            assert len(det.fallbacks) == 3  # native TensorRT, ORT TensorRT EP, ORT CUDA EP


def test_candidates_order(openvino_bundle: Path) -> None:
    m = read_bundle(openvino_bundle).manifest
    assert detector_module.backend_candidates(m, "cpu", None) == [
        ("openvino", "CPU"),
        ("onnxruntime", "cpu"),
    ]
    assert detector_module.backend_candidates(m, "auto", None)[-2:] == [
        ("openvino", "CPU"),
        ("onnxruntime", "cpu"),
    ]
    assert detector_module.backend_candidates(m, "cpu", "onnxruntime") == [("onnxruntime", "cpu")]
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        Detector.load(openvino_bundle, device="tpu")
    with pytest.raises(ConfigError, match="unknown backend"):
        Detector.load(openvino_bundle, backend="tvm")


def test_numpy_fake_backend_and_missing_outputs(onnx_bundle: Path) -> None:
    bundle = read_bundle(onnx_bundle)
    bank_like = np.zeros((1, 16, 8), np.float32)
    fake = NumpyBackend(lambda x: {"embedding": np.repeat(bank_like, len(x), axis=0)}, max_batch=2)
    assert isinstance(fake, Backend)
    det = Detector(bundle, fake)
    results = det([np.zeros((32, 32, 3), np.uint8)] * 3, channel_order="RGB")
    assert det.backend == "numpy/fake" and len(results) == 3
    assert len({r.raw_score for r in results}) == 1
    wrong = Detector(bundle, NumpyBackend(lambda x: {"anomaly_map": np.zeros((len(x), 4, 4))}))
    with pytest.raises(BackendUnavailableError, match="missing \\['embedding'\\]"):
        wrong(np.zeros((32, 32, 3), np.uint8))
    det.close()
    with pytest.raises(BackendUnavailableError, match="closed"):
        det(np.zeros((32, 32, 3), np.uint8))


class _Drifted(TinyPatch):
    """Exports a graph whose weights differ from the ones it scores with."""

    def export_spec(self):  # type: ignore[no-untyped-def]
        spec = super().export_spec()
        module = TinyPatch(TinyPatchConfig()).embedder
        module.load_state_dict(self.embedder.state_dict())
        with torch.no_grad():
            module.conv.bias += 0.05
        spec.module = module
        return spec


def test_parity_mismatch_fails_export_and_names_the_output(tmp_path: Path, meta: dict) -> None:
    # run_torch compares against the exported module itself, so the score check must catch it.
    det = _Drifted(TinyPatchConfig())
    det.fit(synthetic_images(8, seed=0))
    out = tmp_path / "bad.edgead"
    with pytest.raises(ExportError, match=r"output 'score' .*relative error"):
        export_detector(det, meta, "onnx", "fp32", out)
    assert not out.exists()


def test_graph_parity_names_output_and_error() -> None:
    from edgead.export.parity import check_graph_parity

    ref = {"embedding": np.ones((2, 3), np.float32)}
    with pytest.raises(
        ExportError, match=r"output 'embedding' differs from torch by max abs 0\.01"
    ):
        check_graph_parity({"embedding": ref["embedding"] + 0.01}, ref, "fp32", "ort")


def test_unsupported_choices_are_refused(tiny: TinyPatch, meta: dict, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="fp16 use"):
        export_detector(tiny, meta, "onnx", "fp16", tmp_path / "x.edgead")
    with pytest.raises(ExportError, match="unknown target 'tflite'"):
        export_detector(tiny, meta, "tflite", "fp32", tmp_path / "x.edgead")


def test_openvino_fp16_export_records_looser_parity_and_auroc_change(
    tiny: TinyPatch, meta: dict, tmp_path: Path, test_images: np.ndarray, synthetic_mvtec: Path
) -> None:
    from edgead.evaluation import evaluate_bundle

    calls: list[str | None] = []

    def evaluate(bundle: Path, backend: str | None) -> dict:
        calls.append(backend)
        return evaluate_bundle(bundle, synthetic_mvtec, backend=backend)

    m = export_detector(
        tiny,
        meta,
        "openvino",
        "fp16",
        tmp_path / "h.edgead",
        parity_inputs=test_images,
        evaluate=evaluate,
    )
    entry = m.export["parity"]["openvino"]
    assert entry["precision"] == "fp16" and entry["outputs"]["embedding"]["tolerance"] == 5e-2
    assert entry["outputs"]["embedding"]["max_rel_err"] < 5e-2
    assert calls == [None, "onnxruntime"]  # the fp16 graph, then the fp32 reference
    assert m.metrics["runtime"]["backend"] == "openvino/CPU"
    change = m.metrics["image_auroc"] - m.metrics["image_auroc_fp32"]
    assert m.metrics["image_auroc_fp16_change"] == pytest.approx(change)


def test_cli_export_predict_build_engine(
    tmp_path: Path, tiny: TinyPatch, meta: dict, onnx_bundle: Path
) -> None:
    import cv2

    from edgead.cli.main import app
    from edgead.rundir import save_run

    run_dir = save_run(tmp_path / "run", tiny, meta)
    runner = CliRunner()
    out = tmp_path / "cli.edgead"
    res = runner.invoke(
        app, ["export", str(run_dir), "--target", "onnx", "--out", str(out), "--json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["detector"] == "_tiny_patch" and out.is_file()
    images = tmp_path / "imgs"
    images.mkdir()
    for i, img in enumerate(synthetic_images(2, seed=9)):
        cv2.imwrite(str(images / f"{i}.png"), img[:, :, ::-1])
    res = runner.invoke(
        app,
        [
            "predict",
            str(out),
            str(images),
            "--device",
            "cpu",
            "--json",
            "--save-maps",
            str(tmp_path / "maps"),
        ],
    )
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert payload["backend"] == "onnxruntime/CPUExecutionProvider"
    assert len(payload["results"]) == 2 and Path(payload["results"][0]["map"]).is_file()
    with Detector.load(out, device="cpu") as det:
        direct = det(cv2.imread(str(images / "0.png")))
    assert payload["results"][0]["raw_score"] == pytest.approx(direct.raw_score, rel=1e-6)
    res = runner.invoke(app, ["predict", str(out), str(tmp_path / "missing")])
    assert res.exit_code == 2 and "neither an image file nor a folder" in res.output
    res = runner.invoke(app, ["build-engine", str(onnx_bundle)])
    assert res.exit_code == 2 and "error" in res.output  # no TensorRT/CUDA here: clear refusal


def test_cli_predict_rows_from_stdin(rows_bundle: tuple) -> None:
    from edgead.cli.main import app

    path, det_torch, rows = rows_bundle
    lines = "\n".join(json.dumps([float(v) for v in row]) for row in rows[:3])
    named = json.dumps(dict(zip("abcde", map(float, rows[3]), strict=True)))
    res = CliRunner().invoke(
        app,
        ["predict", str(path), "-", "--device", "cpu", "--json"],
        input=lines + "\n" + named + "\n",
    )
    assert res.exit_code == 0, res.output
    got = [r["raw_score"] for r in json.loads(res.stdout)["results"]]
    np.testing.assert_allclose(got, det_torch.score(rows[:4]).scores, rtol=1e-5)


def test_export_run_measures_metrics_through_runtime(
    tmp_path: Path, tiny: TinyPatch, meta: dict, synthetic_mvtec: Path
) -> None:
    from edgead.evaluation import evaluate_bundle
    from edgead.export import export_run
    from edgead.rundir import save_run

    run_dir = save_run(
        tmp_path / "run",
        tiny,
        {
            **meta,
            "seed": 0,
            "data": {"path": str(synthetic_mvtec)},
            "metrics": {"image_auroc": 0.5},
        },
    )
    out = tmp_path / "m.edgead"
    # exact index: the run's threshold carries over unchanged (compressed: tests/unit/
    # test_export_index.py checks the re-fit)
    manifest = export_run(run_dir, "onnx", "fp32", out, index={"index": "flat"})
    assert manifest.export["parity_inputs"] == {"n": 6, "source": "run data"}  # 3 train + 3 test
    metrics = manifest.metrics
    assert metrics["n_test"] == 6 and 0.0 <= metrics["image_auroc"] <= 1.0
    assert metrics["image_auroc_delta"] == pytest.approx(metrics["image_auroc"] - 0.5)
    assert "pixel_auroc" in metrics and metrics["runtime"]["backend"].startswith("onnxruntime")
    again = evaluate_bundle(out, synthetic_mvtec, save_maps=tmp_path / "maps")
    assert again["image_auroc"] == pytest.approx(metrics["image_auroc"])
    assert again["threshold"] == pytest.approx(meta["threshold"]["value"])
    assert len(list((tmp_path / "maps").glob("*.png"))) == 6


def test_real_patchcore_with_reweight_round_trips(tmp_path: Path) -> None:
    """The registered PatchCore (random backbone, 32 px) exported and scored by the runtime,
    with the paper's re-weighted image score: scores and maps match torch."""
    from edgead.models.base import create_detector

    cfg = {
        "image_size": 32,
        "pretrained": False,
        "coreset_ratio": 0.5,
        "reweight": True,
        "num_neighbors": 3,
    }
    det = create_detector("patchcore", cfg)
    det.fit(synthetic_images(4, seed=0))
    test = synthetic_images(2, seed=1) + synthetic_images(2, seed=2, anomalous=True)
    expected = det.score(test)
    out = tmp_path / "pc.edgead"
    m = export_detector(
        det,
        run_meta(expected.scores),
        "onnx",
        "fp32",
        out,
        parity_inputs=np.stack(test),
        index={"index": "flat"},
    )
    assert m.postprocess["score"] == "reweight" and m.backbone == "efficientnet_lite0"
    with Detector.load(out, device="cpu") as runtime:
        results = runtime(test, channel_order="RGB")
    np.testing.assert_allclose([r.raw_score for r in results], expected.scores, rtol=1e-4)
    np.testing.assert_allclose(
        np.stack([r.anomaly_map for r in results]), expected.anomaly_maps, atol=1e-4
    )


def test_evaluate_tabular_bundle_uses_the_run_split(rows_bundle: tuple, tmp_path: Path) -> None:
    from edgead import metrics
    from edgead.data.tabular import adbench_split
    from edgead.evaluation import evaluate_bundle

    path, det_torch, _ = rows_bundle
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(size=(60, 5)), rng.normal(size=(10, 5)) * 4]).astype(np.float32)
    y = np.r_[np.zeros(60), np.ones(10)].astype(np.int64)
    np.savez(tmp_path / "t.npz", X=X, y=y)
    result = evaluate_bundle(path, tmp_path / "t.npz")
    _, test_idx = adbench_split(y, seed=0)
    expected = metrics.image_metrics(y[test_idx], det_torch.score(X[test_idx]).scores)
    assert result["auroc"] == pytest.approx(expected["auroc"])
    assert result["n_test"] == len(test_idx) and result["n_anomalous"] == 10
    assert result["runtime"]["backend"] == "onnxruntime/CPUExecutionProvider"
