"""Export with a nearest-neighbour index: compressed default, exact parity with --index flat,
re-rank arrays in the bundle, threshold re-fit, AUROC budget, CLI --index / --device."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from edgead.bundle import read_bundle
from edgead.errors import ExportError
from edgead.export import export_detector
from edgead.export.exporter import ExportData
from edgead.export.index import DEFAULT_INDEX, INDEX_FILE, RERANK_ARRAY, resolve_factory
from edgead.runtime.detector import Detector
from tests.helpers.tiny_detectors import (
    TinyPatch,
    fitted_tiny,
    parity_images,
    run_meta,
    synthetic_images,
    tiny_export_data,
)


@pytest.fixture(scope="module")
def tiny() -> tuple[TinyPatch, dict[str, Any]]:
    return fitted_tiny()


@pytest.fixture(scope="module")
def export_data() -> ExportData:
    """Labelled test images and held-out normal validation images (a different seed)."""
    return tiny_export_data()


@pytest.fixture(scope="module")
def default_bundle(
    tiny: tuple[TinyPatch, dict[str, Any]], export_data: ExportData, tmp_path_factory: Any
) -> tuple[Path, Any]:
    det, meta = tiny
    out = tmp_path_factory.mktemp("idx") / "default.edgead"
    manifest = export_detector(
        det, meta, "onnx", "fp32", out, parity_inputs=parity_images(), data=export_data
    )
    return out, manifest


def test_default_export_is_compressed_and_records_the_report(
    default_bundle: tuple[Path, Any], tiny: tuple[TinyPatch, dict[str, Any]]
) -> None:
    out, m = default_bundle
    det, _ = tiny
    bank = det.export_spec().arrays["memory_bank"]
    expected, _ = resolve_factory(DEFAULT_INDEX, bank.shape[1], bank.shape[0])
    assert m.index is not None and m.index.factory == expected != "Flat"
    report = m.export["index"]
    assert report["measured_on"] == "validation" and report["n_vectors"] == len(bank)
    assert report["bytes"] == len(read_bundle(out).member(INDEX_FILE))
    assert report["compression_ratio"] == pytest.approx(bank.nbytes / report["bytes"])
    assert 0.0 <= report["recall_at_1"] <= 1.0 and "image_auroc_drop" in report
    assert report["image_auroc_drop"] <= report["max_auroc_drop"]
    # score parity was checked against torch with the exact index, tightly ...
    score = m.export["parity"]["onnxruntime"]["score"]
    assert score["max_rel_err"] <= score["tolerance"] <= 1e-3
    # ... and the compressed index's effect on the same inputs is recorded
    change = m.export["parity"]["index"]
    assert change["score_max_rel_change"] >= 0.0 and np.isfinite(change["score_median_ratio"])


def test_threshold_is_refitted_through_the_compressed_index(
    default_bundle: tuple[Path, Any], export_data: ExportData
) -> None:
    from edgead import calibrate

    out, m = default_bundle
    cal = m.export["calibration"]
    assert cal["method"] == "refit" and cal["policy"] == "percentile:99"
    assert cal["n_inputs"] == len(export_data.normal_inputs())
    # re-derive the threshold: the runtime's raw scores of the validation images, same policy
    with Detector.load(out, device="cpu") as runtime:
        results = runtime(list(export_data.normal_inputs()), channel_order="RGB")
    raw = np.array([r.raw_score for r in results])
    assert m.threshold == pytest.approx(calibrate.threshold_from_normal(raw, 99.0), rel=1e-6)
    assert m.normalisation["max"] == pytest.approx(raw.max(), rel=1e-6)
    assert cal["threshold"] == m.threshold and cal["run_threshold"] != m.threshold


def test_index_flat_keeps_exact_parity_and_the_run_threshold(
    tiny: tuple[TinyPatch, dict[str, Any]], export_data: ExportData, tmp_path: Path
) -> None:
    det, meta = tiny
    out = tmp_path / "flat.edgead"
    m = export_detector(
        det,
        meta,
        "onnx",
        "fp32",
        out,
        parity_inputs=parity_images(),
        data=export_data,
        index={"index": "flat"},
    )
    assert m.index.factory == "Flat" and m.export["calibration"] is None
    assert m.threshold == pytest.approx(meta["threshold"]["value"])
    images = list(export_data.test_inputs)
    with Detector.load(out, device="cpu") as runtime:
        got = np.array([r.raw_score for r in runtime(images, channel_order="RGB")])
    expected = det.score(images).scores
    np.testing.assert_allclose(got, expected, rtol=1e-3)


def test_rerank_array_lands_in_the_bundle_and_round_trips(
    tiny: tuple[TinyPatch, dict[str, Any]], tmp_path: Path
) -> None:
    det, meta = tiny
    bank = det.export_spec().arrays["memory_bank"]
    out = tmp_path / "rerank.edgead"
    m = export_detector(
        det,
        meta,
        "onnx",
        "fp32",
        out,
        parity_inputs=parity_images(),
        index={"index": "sq8", "rerank": 4},
    )
    assert m.index.rerank == 4 and m.index.rerank_array == RERANK_ARRAY
    assert RERANK_ARRAY in m.arrays
    stored = read_bundle(out).array(RERANK_ARRAY)
    assert stored.dtype == np.float16
    np.testing.assert_array_equal(stored, bank.astype(np.float16))
    with Detector.load(out, device="cpu") as runtime:
        np.testing.assert_array_equal(runtime._index.rerank_bank, stored)  # noqa: SLF001
        results = runtime(synthetic_images(2, seed=4), channel_order="RGB")
    assert all(np.isfinite(r.raw_score) for r in results)


def test_without_validation_inputs_the_threshold_is_scaled_and_says_so(
    tiny: tuple[TinyPatch, dict[str, Any]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    det, meta = tiny
    m = export_detector(
        det,
        meta,
        "onnx",
        "fp32",
        tmp_path / "s.edgead",
        parity_inputs=parity_images(),
        index={"index": "sq8"},
    )
    cal = m.export["calibration"]
    ratio = m.export["index"]["dist_ratio_median"]
    assert cal["method"] == "scaled_by_dist_ratio_median" and cal["dist_ratio_median"] == ratio
    assert m.threshold == pytest.approx(meta["threshold"]["value"] * ratio)
    assert m.normalisation["min"] == pytest.approx(meta["normalisation"]["min"] * ratio)
    assert m.export["index"]["measured_on"] == "bank+noise"
    assert any("median distance ratio" in r.getMessage() for r in caplog.records)


def test_too_coarse_index_fails_the_auroc_budget(
    tiny: tuple[TinyPatch, dict[str, Any]], export_data: ExportData, tmp_path: Path
) -> None:
    det, meta = tiny
    out = tmp_path / "coarse.edgead"
    with pytest.raises(ExportError, match="auroc drops by"):
        export_detector(
            det,
            meta,
            "onnx",
            "fp32",
            out,
            parity_inputs=parity_images(),
            data=export_data,
            index={"index": "PCA1,SQ4", "max_auroc_drop": 0.001},
        )
    assert not out.exists()


def test_unknown_index_option_is_refused(
    tiny: tuple[TinyPatch, dict[str, Any]], tmp_path: Path
) -> None:
    det, meta = tiny
    with pytest.raises(ExportError, match="index options"):
        export_detector(det, meta, "onnx", "fp32", tmp_path / "x.edgead", index={"bogus": 1})


def test_reweight_with_an_ivf_index_uses_reconstruct_all(tmp_path: Path) -> None:
    """PatchCore's re-weighted score reconstructs bank vectors; IVF needs a direct map."""
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
    out = tmp_path / "ivf.edgead"
    m = export_detector(
        det,
        run_meta(det.score(test).scores),
        "onnx",
        "fp32",
        out,
        parity_inputs=np.stack(test),
        index={"index": "IVF2,Flat", "nprobe": 2},
    )
    assert m.index.factory == "IVF2,Flat" and m.postprocess["score"] == "reweight"
    with Detector.load(out, device="cpu") as runtime:
        results = runtime(test, channel_order="RGB")
    # IVF2,Flat with nprobe = nlist is exact: scores equal the torch model's
    np.testing.assert_allclose([r.raw_score for r in results], det.score(test).scores, rtol=1e-4)


@pytest.fixture(scope="module")
def run_dir(tiny: tuple[TinyPatch, dict[str, Any]], tmp_path_factory: Any) -> Path:
    from edgead.rundir import save_run

    det, meta = tiny
    return save_run(tmp_path_factory.mktemp("run") / "run", det, meta)


def test_cli_index_options(run_dir: Path, tmp_path: Path) -> None:
    from edgead.cli.main import app

    out = tmp_path / "cli.edgead"
    res = CliRunner().invoke(
        app,
        [
            "export",
            str(run_dir),
            "--out",
            str(out),
            "--index",
            "sq8",
            "--max-auroc-drop",
            "0.01",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["index"]["factory"] == "SQ8" and summary["index"]["max_auroc_drop"] == 0.01
    assert summary["calibration"]["method"] == "scaled_by_dist_ratio_median"
    assert read_bundle(out).manifest.index.factory == "SQ8"
    # the rich table prints the index report
    res = CliRunner().invoke(
        app, ["export", str(run_dir), "--out", str(tmp_path / "t.edgead"), "--index", "flat"]
    )
    assert res.exit_code == 0, res.output
    assert "index recall@1" in res.stdout and "Flat" in res.stdout


def test_cli_device_profile_sets_target_and_explicit_options_win(
    run_dir: Path, tmp_path: Path
) -> None:
    from edgead.cli.main import app
    from edgead.devices import profile_export_settings

    runner = CliRunner()
    target, precision = profile_export_settings("intel-core-cpu")
    out = tmp_path / "dev.edgead"
    res = runner.invoke(
        app,
        [
            "export",
            str(run_dir),
            "--out",
            str(out),
            "--device",
            "intel-core-cpu",
            "--index",
            "flat",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    m = read_bundle(out).manifest
    assert (m.target, m.precision) == (target, precision)
    assert m.export["device_profile"] == "intel-core-cpu"
    res = runner.invoke(
        app,
        [
            "export",
            str(run_dir),
            "--out",
            str(tmp_path / "o.edgead"),
            "--device",
            "jetson-orin-nano",
            "--target",
            "onnx",
            "--index",
            "flat",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["target"] == "onnx"
    assert json.loads(res.stdout)["precision"] == "fp32"
    res = runner.invoke(
        app,
        ["export", str(run_dir), "--out", str(tmp_path / "n.edgead"), "--device", "no-such-device"],
    )
    assert res.exit_code != 0 and not (tmp_path / "n.edgead").exists()
