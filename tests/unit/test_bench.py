"""`edgead bench` on a tiny exported bundle: timings, accuracy columns, JSON, chart, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgead.bench import (
    _add_accuracy,
    available_choices,
    bench_bundles,
    render_chart,
    render_markdown,
)
from edgead.bundle import read_bundle
from edgead.cli.main import app
from edgead.errors import ConfigError
from edgead.export import export_detector
from tests.helpers.tiny_detectors import TinyPatch, TinyPatchConfig, run_meta, synthetic_images

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    det = TinyPatch(TinyPatchConfig())
    det.fit(synthetic_images(8, seed=0))
    meta = run_meta(det.score(synthetic_images(6, seed=1)).scores)
    out = tmp_path_factory.mktemp("bench") / "tiny.edgead"
    parity = np.stack(synthetic_images(2, seed=2) + synthetic_images(2, seed=3, anomalous=True))
    export_detector(det, meta, "onnx", "fp32", out, parity_inputs=parity)
    return out


@pytest.fixture(scope="module")
def mvtec_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "tiny_category"
    for sub, anomalous, seed in (
        ("train/good", False, 4),
        ("test/good", False, 5),
        ("test/broken", True, 6),
    ):
        (root / sub).mkdir(parents=True)
        for i, img in enumerate(synthetic_images(4, seed=seed, anomalous=anomalous)):
            cv2.imwrite(str(root / sub / f"{i:03d}.png"), img[..., ::-1])
    return root


def test_bench_in_process_with_data(tiny_bundle: Path, mvtec_folder: Path) -> None:
    report = bench_bundles(
        [tiny_bundle],
        backends=["onnxruntime/cpu"],
        batches=(1, 2),
        frames=4,
        warmup=1,
        data=str(mvtec_folder),
        isolate=False,
        threads=1,
    )
    assert report["schema_version"] == 1 and report["device"]["logical_cores"] >= 1
    assert report["versions"]["onnxruntime"]
    (entry,) = report["results"]
    assert entry["status"] == "ok", entry.get("error")
    assert entry["backend_used"] == "onnxruntime/CPUExecutionProvider"
    assert entry["bundle_sha256"] == read_bundle(tiny_bundle).sha256
    for batch in ("1", "2"):
        stats = entry["batches"][batch]
        assert stats["images"] == 4 and stats["throughput_ips"] > 0
        total = stats["latency_ms"]["total"]
        assert 0 < total["p50"] <= total["p95"] <= total["p99"]
        assert {"preprocess", "graph", "search", "postprocess"} <= set(stats["latency_ms"])
    assert entry["n_test"] == 8
    assert entry["image_auroc"] > 0.9  # bright squares are easy for the tiny memory bank
    assert entry["max_abs_score_diff"] == 0.0  # it is its own reference
    assert entry["peak_rss_mib"] > 0
    # the backend's error on the bundle's reference outputs (torch fp32 at export)
    ref = entry["reference"]
    assert ref["passed"] and ref["precision"] == "fp32" and ref["tolerance"] == 1e-3
    assert 0 <= ref["max_rel_err"] < 1e-5
    assert "reference max rel err" in render_markdown(report)


def test_bench_isolated_worker_reports_rss(tiny_bundle: Path) -> None:
    report = bench_bundles([tiny_bundle], backends=["onnxruntime"], frames=2, warmup=1)
    (entry,) = report["results"]
    assert entry["status"] == "ok", entry.get("error")
    assert entry["peak_rss_mib"] >= entry["rss_before_load_mib"] > 0
    assert entry["load_ms"] > 0


def test_unknown_backend_is_refused(tiny_bundle: Path) -> None:
    manifest = read_bundle(tiny_bundle).manifest
    assert [c.label for c in available_choices(manifest, None)][0] == "onnxruntime/cpu"
    with pytest.raises(ConfigError, match="matches nothing available here"):
        available_choices(manifest, ["tensorrt/dla"])
    with pytest.raises(ConfigError, match="--batch"):
        bench_bundles([tiny_bundle], batches=(0,), isolate=False)


def test_accuracy_columns_against_reference() -> None:
    labels = [0, 0, 1, 1]
    results = [
        {
            "status": "ok",
            "label": "onnxruntime/cpu",
            "precision": "fp32",
            "bundle": "a",
            "scores": {"raw": [0.1, 0.2, 0.8, 0.9], "labels": labels},
        },
        {
            "status": "ok",
            "label": "openvino/CPU",
            "precision": "fp16",
            "bundle": "b",
            "scores": {"raw": [0.1, 0.25, 0.8, 0.15], "labels": labels},
        },
        {"status": "failed", "label": "tensorrt/cuda", "bundle": "b"},
    ]
    manifests = {
        "a": SimpleNamespace(metrics={"image_auroc": 1.0}),
        "b": SimpleNamespace(metrics={}),
    }
    _add_accuracy(results, manifests)
    ref, other, failed = results
    assert ref["image_auroc"] == 1.0 and ref["image_auroc_delta"] == 0.0
    assert ref["max_abs_score_diff"] == 0.0
    assert other["image_auroc"] == pytest.approx(0.75)  # pairs won: 0.8 > both goods, 0.15 > 0.1
    assert other["image_auroc_delta"] is None  # the bundle recorded no AUROC
    assert other["max_abs_score_diff"] == pytest.approx(0.75)
    assert "image_auroc" not in failed


def test_cli_bench_writes_json_and_png(tiny_bundle: Path, tmp_path: Path) -> None:
    out_json, out_png = tmp_path / "bench.json", tmp_path / "bench.png"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            str(tiny_bundle),
            "--backends",
            "onnxruntime/cpu",
            "--batch",
            "1,2",
            "--frames",
            "2",
            "--warmup",
            "1",
            "--no-isolate",
            "--json",
            str(out_json),
            "--plot",
            str(out_png),
            "--markdown",
            str(tmp_path / "bench.md"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "b1 total p50 ms" in result.stdout and "onnxruntime/cpu" in result.stdout
    report = json.loads(out_json.read_text())
    assert report["results"][0]["status"] == "ok"
    image = cv2.imread(str(out_png))
    assert image is not None and image.shape[0] > 100
    table = (tmp_path / "bench.md").read_text()
    assert table == render_markdown(report)
    assert "| batch 2 images/s |" in table and table.count("\n|") >= 10
    again = render_chart(report, tmp_path / "again.png")
    assert again.stat().st_size > 1000
    bad = CliRunner().invoke(app, ["bench", str(tiny_bundle), "--batch", "one"])
    assert bad.exit_code == 2


def test_same_graph_is_timed_once(tiny_bundle: Path) -> None:
    report = bench_bundles(
        [tiny_bundle, tiny_bundle], backends=["onnxruntime/cpu"], frames=1, warmup=0, isolate=False
    )
    (entry,) = report["results"]
    assert entry["status"] == "ok" and entry["precision"] == "fp32"
